"""What the dialog layer raises: bad input that cannot make or join a dialog, and events a
dialog's state does not allow."""

from __future__ import annotations

import enum


class DialogError(Exception):
    """A message cannot create or join a dialog, or the caller asked for something RFC 3261
    forbids in this dialog. `status` is the response a received request should get (e.g. 400
    for an INVITE without Contact); None when the error is the caller's own doing."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DialogStateError(DialogError):
    """An event the dialog's transition table does not allow in its current state."""

    def __init__(self, dialog: str, state: enum.Enum, event: enum.Enum) -> None:
        super().__init__(f"dialog {dialog} in state {state.name}: {event.value} is not allowed")
        self.state = state
        self.event = event
