"""Finding the dialog a received message belongs to (one dict lookup on the dialog ID), and
the set of dialogs one INVITE we sent may create when it forks (RFC 3261 §12.1.2, §13.2.2.4)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from sbc.sip.dialog.core import Dialog, DialogKey, DialogState
from sbc.sip.dialog.errors import DialogError
from sbc.sip.message import Message, Request, Response


def message_key(msg: Message) -> DialogKey | None:
    """The dialog ID seen from our side: a received request names our tag in To and the
    peer's in From; a received response the other way round. None for a request outside
    any dialog (no To tag) or a response without To tag."""
    if isinstance(msg, Request):
        local, remote = msg.to_tag, msg.from_tag
    else:
        local, remote = msg.from_tag, msg.to_tag
    if local is None or (remote is None and isinstance(msg, Response)):
        return None
    return DialogKey(msg.call_id, local, remote or "")


class DialogSet:
    """The dialogs answers to one INVITE we sent create: one per To tag (forking). The first
    2xx confirms its dialog; a 2xx from another branch makes an extra confirmed dialog the
    caller must ACK and then end with BYE (§13.2.2.4); a non-2xx final answer ends every early
    one (§12.3). `finish()` ends those still early once the INVITE transaction is over."""

    __slots__ = (
        "invite",
        "local_contact",
        "over_tls",
        "dialogs",
        "confirmed",
        "extra",
        "_on_new",
        "_on_end",
    )

    def __init__(
        self,
        invite: Request,
        local_contact: str,
        *,
        over_tls: bool = False,
        on_new: Callable[[Dialog], None] | None = None,
        on_end: Callable[[Dialog], None] | None = None,
    ) -> None:
        if invite.method != "INVITE" or invite.from_tag is None or invite.to_tag is not None:
            raise DialogError("a dialog set starts from an INVITE with a From tag and no To tag")
        self.invite = invite
        self.local_contact = local_contact
        self.over_tls = over_tls
        self.dialogs: dict[str, Dialog] = {}  # by remote (To) tag
        self.confirmed: Dialog | None = None  # the first 2xx's dialog: the call
        self.extra: list[Dialog] = []  # later 2xx dialogs: ACK, then BYE
        self._on_new = on_new
        self._on_end = on_end

    @property
    def call_id(self) -> str:
        return self.invite.call_id

    @property
    def local_tag(self) -> str:
        return self.invite.from_tag or ""

    def early(self) -> list[Dialog]:
        return [d for d in self.dialogs.values() if d.state is DialogState.EARLY]

    def receive(self, response: Response) -> Dialog | None:
        """An answer to our INVITE: the dialog it creates or belongs to, or None (100, a 1xx
        without To tag, or a non-2xx final answer, which ends every early dialog)."""
        invite = self.invite
        cseq = response.cseq
        if (
            response.call_id != invite.call_id
            or response.from_tag != self.local_tag
            or cseq.method != "INVITE"
            or cseq.number != invite.cseq.number
        ):
            raise DialogError(f"{response.status} response does not answer this INVITE")
        status = response.status
        tag = response.to_tag
        if status >= 300:
            for early in self.early():
                early.terminate()
                self._ended(early)
            return None
        if tag is None:
            if status >= 200:
                raise DialogError(f"{status} to INVITE has no To tag: it cannot make a dialog")
            return None
        if status == 100:
            return None
        dialog = self.dialogs.get(tag)
        if dialog is None:
            dialog = Dialog.from_uac(invite, response, self.local_contact, over_tls=self.over_tls)
            self.dialogs[tag] = dialog
            if self._on_new is not None:
                self._on_new(dialog)
        elif dialog.state is not DialogState.TERMINATED:
            dialog.receive_response(response)
        if status >= 200 and dialog.state is DialogState.CONFIRMED:
            if self.confirmed is None:
                self.confirmed = dialog
            elif dialog is not self.confirmed and dialog not in self.extra:
                self.extra.append(dialog)
        return dialog

    def finish(self) -> list[Dialog]:
        """The INVITE transaction is over: end the dialogs no 2xx confirmed; returns them."""
        ended = self.early()
        for dialog in ended:
            dialog.terminate()
            self._ended(dialog)
        return ended

    def _ended(self, dialog: Dialog) -> None:
        if self._on_end is not None:
            self._on_end(dialog)


class DialogTable:
    """Every live dialog by ID, and the dialog sets of INVITEs we sent by (Call-ID, From tag)."""

    __slots__ = ("_dialogs", "_sets")

    def __init__(self) -> None:
        self._dialogs: dict[DialogKey, Dialog] = {}
        self._sets: dict[tuple[str, str], DialogSet] = {}

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))

    def __contains__(self, dialog: object) -> bool:
        return isinstance(dialog, Dialog) and self._dialogs.get(dialog.key) is dialog

    def add(self, dialog: Dialog) -> None:
        key = dialog.key
        known = self._dialogs.get(key)
        if known is not None and known is not dialog:
            raise DialogError(f"a dialog with ID {key} exists already")
        self._dialogs[key] = dialog

    def remove(self, dialog: Dialog) -> None:
        if self._dialogs.get(dialog.key) is dialog:
            del self._dialogs[dialog.key]

    def get(self, call_id: str, local_tag: str, remote_tag: str) -> Dialog | None:
        return self._dialogs.get(DialogKey(call_id, local_tag, remote_tag))

    def match(self, msg: Message) -> Dialog | None:
        """The dialog a received request or response belongs to, or None (for a request with a
        To tag: answer 481, RFC 3261 §12.2.2)."""
        key = message_key(msg)
        return None if key is None else self._dialogs.get(key)

    # ----- INVITEs we send ------------------------------------------------------------------
    def start_invite(
        self, invite: Request, local_contact: str, *, over_tls: bool = False
    ) -> DialogSet:
        """Track the dialogs answers to `invite` will create; they join the table as they come
        and leave it when the set ends them (a non-2xx final answer or finish())."""
        dset = DialogSet(
            invite, local_contact, over_tls=over_tls, on_new=self.add, on_end=self.remove
        )
        key = (dset.call_id, dset.local_tag)
        if key in self._sets:
            raise DialogError(
                f"an INVITE with Call-ID {key[0]} and From tag {key[1]} is tracked already"
            )
        self._sets[key] = dset
        return dset

    def match_set(self, response: Response) -> DialogSet | None:
        """The dialog set of the INVITE a received response answers."""
        tag = response.from_tag
        return None if tag is None else self._sets.get((response.call_id, tag))

    def remove_set(self, dset: DialogSet) -> None:
        """Forget the set (its dialogs stay in the table until removed one by one)."""
        key = (dset.call_id, dset.local_tag)
        if self._sets.get(key) is dset:
            del self._sets[key]
