"""Digest authentication: known-answer vectors, client/server round trips, replay and
stale-nonce handling with a virtual clock, and parser torture."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from sbc.sip import auth
from sbc.sip.auth import (
    SUPPORTED_ALGORITHMS,
    Challenge,
    ClientNonceCounter,
    Credentials,
    DigestError,
    DigestParseError,
    DigestServer,
    NotDigestError,
    NoUsableChallengeError,
    UnsupportedAlgorithmError,
    VerifyStatus,
    _Sha512Fallback,
    build_credentials,
    choose_challenge,
    choose_per_realm,
    compute_ha1,
    compute_response,
    format_challenge,
    format_credentials,
    parse_challenge,
    parse_challenges,
    parse_credentials,
)
from sbc.sip.errors import ParseError

SECRET = b"0123456789abcdef-test-secret-key"
REALM = "pbx.example.net"
USERS = {"alice": "wonder land", "bob": 'p"ss\\word'}
RURI = "sip:+15551234567@pbx.example.net"
T0 = 1_700_000_000.0  # virtual wall clock


def lookup(username: str, realm: str) -> str | None:
    return USERS.get(username) if realm == REALM else None


def counting_random() -> Callable[[int], bytes]:
    counter = itertools.count()

    def random_bytes(n: int) -> bytes:
        return next(counter).to_bytes(n, "big")

    return random_bytes


def make_server(**kwargs: Any) -> DigestServer:
    kwargs.setdefault("random_bytes", counting_random())
    return DigestServer(REALM, SECRET, **kwargs)


def answer(
    server: DigestServer,
    now: float,
    *,
    algorithm: str = "SHA-256",
    user: str = "alice",
    password: str | None = None,
    method: str = "INVITE",
    uri: str = RURI,
    body: bytes = b"",
    nc: int = 1,
) -> str:
    challenge = parse_challenge(server.challenge(now, algorithms=(algorithm,))[0])
    return build_credentials(
        challenge,
        username=user,
        password=USERS[user] if password is None else password,
        method=method,
        uri=uri,
        body=body,
        cnonce="c0ffee42",
        nc=nc,
    )


# --------------------------------------------------------------------------- vectors


def test_rfc2617_section_3_5_md5_example() -> None:
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    value = build_credentials(
        challenge,
        username="Mufasa",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce="0a4f113b",
        nc=1,
    )
    creds = parse_credentials(value)
    assert creds.response == "6629fae49393a05397450978507c4ef1"
    assert (creds.qop, creds.nc, creds.cnonce) == ("auth", "00000001", "0a4f113b")
    assert creds.opaque == "5ccc069c403ebaf9f0171e9517f40e41"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_examples(algorithm: str, expected: str) -> None:
    challenge = parse_challenge(
        'Digest\n realm="http-auth@example.org",\n qop="auth, auth-int",\n'
        f' algorithm={algorithm},\n nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\n'
        ' opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    assert challenge.qop == ("auth", "auth-int")
    value = build_credentials(
        challenge,
        username="Mufasa",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert parse_credentials(value).response == expected
    assert f"algorithm={algorithm}," in value  # RFC 7616 §3.4: algorithm unquoted


def test_rfc2069_response_without_qop() -> None:
    # RFC 2069 §2.1.2: response = H(H(A1) ":" nonce ":" H(A2)), no nc/cnonce.
    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5("Mufasa:testrealm@host.com:Circle Of Life")
    expected = md5(f"{ha1}:abc:{md5('GET:/dir/index.html')}")
    challenge = Challenge(realm="testrealm@host.com", nonce="abc")
    value = build_credentials(
        challenge,
        username="Mufasa",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce="unused",
    )
    creds = parse_credentials(value)
    assert creds.response == expected
    assert creds.qop is None and creds.nc is None and creds.cnonce is None


def test_sess_variant_folds_nonce_and_cnonce_into_ha1_rfc7616_3_4_2() -> None:
    def h(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    base = h("u:r:pw")
    session = h(f"{base}:n:cn")
    expected = h(f"{session}:n:00000001:cn:auth:{h('REGISTER:sip:r')}")
    got = compute_response(
        algorithm="SHA-256-sess",
        ha1=compute_ha1("SHA-256-sess", "u", "r", "pw"),
        nonce="n",
        method="REGISTER",
        uri="sip:r",
        qop="auth",
        nc="00000001",
        cnonce="cn",
    )
    assert got == expected


def test_auth_int_hashes_the_body_rfc7616_3_4_3() -> None:
    def h(data: bytes) -> str:
        return hashlib.md5(data).hexdigest()

    ha1 = h(b"u:r:pw")
    ha2 = h(b"INVITE:sip:x:" + h(b"v=0\r\n").encode())
    expected = h(f"{ha1}:n:00000002:cn:auth-int:{ha2}".encode())
    got = compute_response(
        algorithm="MD5",
        ha1=ha1,
        nonce="n",
        method="INVITE",
        uri="sip:x",
        qop="auth-int",
        nc="00000002",
        cnonce="cn",
        body=b"v=0\r\n",
    )
    assert got == expected


@pytest.mark.parametrize("length", [0, 3, 111, 112, 127, 128, 239, 240, 1000])
def test_sha512_256_fallback_matches_fips_180_4(length: int) -> None:
    data = (bytes(range(256)) * 4)[:length]
    try:
        reference = hashlib.new("sha512_256", data).digest()
    except ValueError:
        pytest.skip("this OpenSSL has no SHA-512/256 to compare with")
    assert _Sha512Fallback.sha512_256(data) == reference


def test_sha512_256_fallback_is_used_when_openssl_lacks_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_new = hashlib.new

    def no_sha512_256(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.lower().replace("-", "_").replace("/", "_") == "sha512_256":
            raise ValueError(f"unsupported hash type {name}")
        return real_new(name, *args, **kwargs)

    monkeypatch.setattr(hashlib, "new", no_sha512_256)
    digest = auth._pick_sha512_256()
    assert digest is auth._sha512_256_fallback_hex
    assert digest(b"abc") == _Sha512Fallback.sha512_256(b"abc").hex()


def test_sha512_256_fallback_fips_abc_example() -> None:
    # FIPS 180-4 example value for SHA-512/256("abc").
    assert _Sha512Fallback.sha512_256(b"abc").hex() == (
        "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
    )


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("algorithm", SUPPORTED_ALGORITHMS)
@pytest.mark.parametrize("qop", [None, "auth", "auth-int"])
def test_round_trip_every_algorithm_and_qop(algorithm: str, qop: str | None) -> None:
    server = make_server(algorithms=SUPPORTED_ALGORITHMS, qop=(qop,) if qop else ())
    challenge = parse_challenge(server.challenge(T0, algorithms=(algorithm,))[0])
    assert challenge.algorithm == algorithm
    value = build_credentials(
        challenge,
        username="bob",
        password=USERS["bob"],
        method="INVITE",
        uri=RURI,
        body=b"v=0\r\n",
        cnonce="abc/def+1=",
        nc=1,
    )
    creds = parse_credentials(value)
    assert creds.qop == qop and creds.algorithm == algorithm
    assert (creds.cnonce is not None) == (qop is not None or algorithm.endswith("-sess"))
    result = server.verify(
        value,
        method="INVITE",
        request_uri=RURI,
        body=b"v=0\r\n",
        now=T0 + 10,
        password_lookup=lookup,
    )
    assert result.status is VerifyStatus.OK, result.reason
    assert (result.username, result.realm) == ("bob", REALM)
    assert result.ok


@pytest.mark.parametrize("algorithm", SUPPORTED_ALGORITHMS)
def test_server_accepts_stored_ha1_instead_of_password(algorithm: str) -> None:
    server = make_server(algorithms=SUPPORTED_ALGORITHMS)
    seen: list[str] = []

    def ha1_lookup(user: str, realm: str, base_algorithm: str) -> str | None:
        seen.append(base_algorithm)
        return compute_ha1(base_algorithm, user, realm, USERS[user]).upper()

    value = answer(server, T0, algorithm=algorithm)
    result = server.verify(value, method="INVITE", now=T0, ha1_lookup=ha1_lookup)
    assert result.status is VerifyStatus.OK
    assert seen == [algorithm.removesuffix("-sess")]


def test_client_can_answer_with_stored_ha1() -> None:
    server = make_server()
    challenge = parse_challenge(server.challenge(T0)[0])
    value = build_credentials(
        challenge,
        username="alice",
        ha1=compute_ha1("SHA-256", "alice", REALM, USERS["alice"]),
        method="REGISTER",
        uri="sip:pbx.example.net",
        cnonce="x1",
    )
    assert server.verify(value, method="REGISTER", now=T0, password_lookup=lookup).ok


def test_build_credentials_needs_exactly_one_secret() -> None:
    challenge = Challenge(realm="r", nonce="n")
    with pytest.raises(TypeError):
        build_credentials(challenge, username="u", method="M", uri="u", cnonce="c")
    with pytest.raises(TypeError):
        build_credentials(
            challenge, username="u", method="M", uri="u", cnonce="c", password="p", ha1="00"
        )


def test_build_credentials_refuses_unknown_algorithm() -> None:
    challenge = Challenge(realm="r", nonce="n", algorithm="SHA-3", qop=("auth",))
    with pytest.raises(UnsupportedAlgorithmError, match="SHA-3"):
        build_credentials(challenge, username="u", password="p", method="M", uri="u", cnonce="c")


def test_client_prefers_auth_over_auth_int_rfc7616_3_4() -> None:
    challenge = Challenge(realm="r", nonce="n", qop=("auth-int", "auth"))
    value = build_credentials(
        challenge, username="u", password="p", method="M", uri="u", cnonce="c"
    )
    assert parse_credentials(value).qop == "auth"
    only_int = Challenge(realm="r", nonce="n", qop=("auth-int",))
    value = build_credentials(only_int, username="u", password="p", method="M", uri="u", cnonce="c")
    assert parse_credentials(value).qop == "auth-int"


def test_unknown_qop_values_are_ignored_but_none_usable_is_an_error() -> None:
    challenge = Challenge(realm="r", nonce="n", qop=("auth-conf", "auth"))
    value = build_credentials(
        challenge, username="u", password="p", method="M", uri="u", cnonce="c"
    )
    assert parse_credentials(value).qop == "auth"
    with pytest.raises(DigestError, match="auth-conf"):
        build_credentials(
            Challenge(realm="r", nonce="n", qop=("auth-conf",)),
            username="u",
            password="p",
            method="M",
            uri="u",
            cnonce="c",
        )


def test_credentials_value_cannot_inject_header_lines() -> None:
    challenge = Challenge(realm="r", nonce="n", qop=("auth",))
    with pytest.raises(DigestError, match="line break"):
        build_credentials(
            challenge, username="eve\r\nVia: x", password="p", method="M", uri="u", cnonce="c"
        )


def test_client_nonce_counter_counts_per_nonce() -> None:
    counter = ClientNonceCounter(max_nonces=2)
    assert [counter.next_nc("a"), counter.next_nc("a"), counter.next_nc("b")] == [1, 2, 1]
    assert counter.next_nc("a") == 3
    counter.next_nc("c")  # evicts "b", the least recently used
    assert counter.next_nc("b") == 1
    counter.forget("c")
    assert counter.next_nc("c") == 1


# --------------------------------------------------------------------------- server checks


def test_wrong_password_is_bad_credentials() -> None:
    server = make_server()
    value = answer(server, T0, password="guess")
    result = server.verify(value, method="INVITE", now=T0, password_lookup=lookup)
    assert result.status is VerifyStatus.BAD_CREDENTIALS
    assert result.username == "alice"


def test_unknown_user() -> None:
    server = make_server()
    value = answer(server, T0, user="alice")
    result = server.verify(value, method="INVITE", now=T0, password_lookup=lambda u, r: None)
    assert result.status is VerifyStatus.UNKNOWN_USER


def test_method_is_bound_into_the_response() -> None:
    server = make_server()
    value = answer(server, T0, method="INVITE")
    result = server.verify(value, method="BYE", now=T0, password_lookup=lookup)
    assert result.status is VerifyStatus.BAD_CREDENTIALS


def test_auth_int_binds_the_body() -> None:
    server = make_server(qop=("auth-int",))
    value = answer(server, T0, body=b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n")
    tampered = server.verify(
        value,
        method="INVITE",
        body=b"v=0\r\no=- 1 1 IN IP4 6.6.6.6\r\n",
        now=T0,
        password_lookup=lookup,
    )
    assert tampered.status is VerifyStatus.BAD_CREDENTIALS
    intact = server.verify(
        value,
        method="INVITE",
        body=b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n",
        now=T0,
        password_lookup=lookup,
    )
    assert intact.status is VerifyStatus.OK


def test_qop_auth_does_not_bind_the_body() -> None:
    server = make_server(qop=("auth",))
    value = answer(server, T0, body=b"one")
    assert server.verify(value, method="INVITE", body=b"two", now=T0, password_lookup=lookup).ok


def test_uri_must_match_request_uri_rfc7616_3_4_6() -> None:
    server = make_server()
    value = answer(server, T0, uri=RURI)
    result = server.verify(
        value,
        method="INVITE",
        request_uri="sip:other@pbx.example.net",
        now=T0,
        password_lookup=lookup,
    )
    assert result.status is VerifyStatus.MALFORMED


def test_credentials_for_another_realm_are_refused() -> None:
    other = DigestServer("other.example", SECRET, random_bytes=counting_random())
    value = answer(other, T0)
    result = make_server().verify(value, method="INVITE", now=T0, password_lookup=lookup)
    assert result.status is VerifyStatus.BAD_CREDENTIALS
    assert result.realm == "other.example"


def test_algorithm_not_offered_is_refused() -> None:
    md5_server = make_server(algorithms=("MD5",))
    sha_server = make_server(algorithms=("SHA-256", "MD5"))
    value = answer(sha_server, T0, algorithm="SHA-256")
    result = md5_server.verify(value, method="INVITE", now=T0, password_lookup=lookup)
    assert result.status is VerifyStatus.BAD_CREDENTIALS


def test_qop_less_answer_refused_when_not_allowed() -> None:
    server = make_server(qop=("auth",), accept_no_qop=False)
    nonce = parse_challenge(server.challenge(T0)[0]).nonce
    bare = build_credentials(
        Challenge(realm=REALM, nonce=nonce, algorithm="SHA-256"),
        username="alice",
        password=USERS["alice"],
        method="INVITE",
        uri=RURI,
        cnonce="c",
    )
    result = server.verify(bare, method="INVITE", now=T0, password_lookup=lookup)
    assert result.status is VerifyStatus.BAD_CREDENTIALS


def test_malformed_header_reports_malformed_with_reason() -> None:
    server = make_server()
    result = server.verify(
        'Digest username="alice", realm="x', method="INVITE", now=T0, password_lookup=lookup
    )
    assert result.status is VerifyStatus.MALFORMED
    assert "closing" in result.reason
    basic = server.verify(
        "Basic YWxhZGRpbjpvcGVuc2VzYW1l", method="INVITE", now=T0, password_lookup=lookup
    )
    assert basic.status is VerifyStatus.MALFORMED and "Basic" in basic.reason


def test_verify_needs_exactly_one_lookup() -> None:
    server = make_server()
    with pytest.raises(TypeError):
        server.verify("Digest x=1", method="INVITE", now=T0)


# --------------------------------------------------------------------------- nonces


def test_stale_nonce_rfc7616_3_3_then_fresh_challenge_works() -> None:
    server = make_server(nonce_lifetime=300.0)
    value = answer(server, T0)
    late = T0 + 301.0
    result = server.verify(value, method="INVITE", now=late, password_lookup=lookup)
    assert result.status is VerifyStatus.STALE
    rechallenge = server.challenge(late, stale=True)
    parsed = parse_challenge(rechallenge[0])
    assert parsed.stale is True and "stale=TRUE" in rechallenge[0]
    fresh = build_credentials(
        parsed,
        username="alice",
        password=USERS["alice"],
        method="INVITE",
        uri=RURI,
        cnonce="c2",
    )
    assert server.verify(fresh, method="INVITE", now=late + 1, password_lookup=lookup).ok


def test_nonce_valid_until_its_lifetime_ends() -> None:
    server = make_server(nonce_lifetime=300.0)
    value = answer(server, T0)
    assert server.verify(value, method="INVITE", now=T0 + 299.0, password_lookup=lookup).ok


def test_expired_nonce_with_wrong_password_is_not_stale_rfc7616_3_3() -> None:
    # stale=TRUE tells the client its password was right; never say so for a wrong one.
    server = make_server(nonce_lifetime=300.0)
    value = answer(server, T0, password="guess")
    result = server.verify(value, method="INVITE", now=T0 + 1000, password_lookup=lookup)
    assert result.status is VerifyStatus.BAD_CREDENTIALS


def test_nonce_from_the_future_is_stale() -> None:
    server = make_server()
    value = answer(server, T0 + 3600)  # issued before the clock was set back an hour
    result = server.verify(value, method="INVITE", now=T0, password_lookup=lookup)
    assert result.status is VerifyStatus.STALE


def test_forged_nonce_is_bad_nonce() -> None:
    server = make_server()
    real = parse_challenge(server.challenge(T0)[0])
    flipped = real.nonce[:10] + ("A" if real.nonce[10] != "A" else "B") + real.nonce[11:]
    candidates = [
        flipped,
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        real.nonce + "A",
        real.nonce[:-1] + "+",
        "",
    ]
    for nonce in candidates:
        forged = Challenge(realm=REALM, nonce=nonce, algorithm="SHA-256", qop=("auth",))
        value = build_credentials(
            forged,
            username="alice",
            password=USERS["alice"],
            method="INVITE",
            uri=RURI,
            cnonce="c",
        )
        result = server.verify(value, method="INVITE", now=T0, password_lookup=lookup)
        assert result.status is VerifyStatus.BAD_NONCE, nonce


def test_nonce_from_another_secret_is_bad_nonce() -> None:
    other = DigestServer(REALM, b"another-secret-of-16+", random_bytes=counting_random())
    value = answer(other, T0)
    result = make_server().verify(value, method="INVITE", now=T0, password_lookup=lookup)
    assert result.status is VerifyStatus.BAD_NONCE


def test_nonce_is_bound_to_the_realm() -> None:
    # Same secret, another realm: the HMAC covers the realm, so the nonce does not transfer.
    other = DigestServer("other.example", SECRET, random_bytes=counting_random())
    nonce = parse_challenge(other.challenge(T0)[0]).nonce
    ours = Challenge(realm=REALM, nonce=nonce, algorithm="SHA-256", qop=("auth",))
    value = build_credentials(
        ours, username="alice", password=USERS["alice"], method="INVITE", uri=RURI, cnonce="c"
    )
    result = make_server().verify(value, method="INVITE", now=T0, password_lookup=lookup)
    assert result.status is VerifyStatus.BAD_NONCE


def test_nonces_carry_no_password_and_differ_each_time() -> None:
    server = DigestServer(REALM, SECRET)
    first = parse_challenge(server.challenge(T0)[0]).nonce
    second = parse_challenge(server.challenge(T0)[0]).nonce
    assert first != second
    assert len(first) == 48 and first.replace("-", "").replace("_", "").isalnum()


# --------------------------------------------------------------------------- replay


def test_replayed_nc_is_refused() -> None:
    server = make_server()
    challenge = parse_challenge(server.challenge(T0)[0])

    def with_nc(nc: int) -> str:
        return build_credentials(
            challenge,
            username="alice",
            password=USERS["alice"],
            method="INVITE",
            uri=RURI,
            cnonce=f"c{nc}",
            nc=nc,
        )

    def check(value: str, at: float) -> VerifyStatus:
        return server.verify(value, method="INVITE", now=at, password_lookup=lookup).status

    first = with_nc(1)
    assert check(first, T0) is VerifyStatus.OK
    assert check(first, T0 + 1) is VerifyStatus.REPLAY
    assert check(with_nc(3), T0 + 2) is VerifyStatus.OK
    assert check(with_nc(2), T0 + 3) is VerifyStatus.REPLAY  # not above the highest seen
    assert check(with_nc(4), T0 + 4) is VerifyStatus.OK


def test_nc_zero_is_never_accepted_rfc7616_3_4() -> None:
    server = make_server()
    value = answer(server, T0).replace("nc=00000001", "nc=00000000")
    creds = parse_credentials(value)
    ha1 = compute_ha1("SHA-256", "alice", REALM, USERS["alice"])
    response = compute_response(
        algorithm="SHA-256",
        ha1=ha1,
        nonce=creds.nonce,
        method="INVITE",
        uri=RURI,
        qop="auth",
        nc="00000000",
        cnonce=creds.cnonce,
    )
    forged = value.replace(creds.response, response)
    result = server.verify(forged, method="INVITE", now=T0, password_lookup=lookup)
    assert result.status is VerifyStatus.REPLAY


def test_failed_attempts_do_not_advance_nc() -> None:
    server = make_server()
    challenge = parse_challenge(server.challenge(T0)[0])
    bad = build_credentials(
        challenge,
        username="alice",
        password="guess",
        method="INVITE",
        uri=RURI,
        cnonce="c",
        nc=5,
    )
    assert server.verify(bad, method="INVITE", now=T0, password_lookup=lookup).status is (
        VerifyStatus.BAD_CREDENTIALS
    )
    good = build_credentials(
        challenge,
        username="alice",
        password=USERS["alice"],
        method="INVITE",
        uri=RURI,
        cnonce="c",
        nc=1,
    )
    assert server.verify(good, method="INVITE", now=T0, password_lookup=lookup).ok


def test_qop_less_answer_accepted_once_per_nonce() -> None:
    server = make_server(qop=())
    value = answer(server, T0)
    assert parse_credentials(value).qop is None
    assert server.verify(value, method="INVITE", now=T0, password_lookup=lookup).ok
    again = server.verify(value, method="INVITE", now=T0 + 1, password_lookup=lookup)
    assert again.status is VerifyStatus.REPLAY


def test_qop_less_answer_after_qop_use_is_a_replay() -> None:
    server = make_server(qop=("auth",))
    challenge = parse_challenge(server.challenge(T0)[0])
    with_qop = build_credentials(
        challenge,
        username="alice",
        password=USERS["alice"],
        method="INVITE",
        uri=RURI,
        cnonce="c",
    )
    assert server.verify(with_qop, method="INVITE", now=T0, password_lookup=lookup).ok
    bare = build_credentials(
        Challenge(realm=REALM, nonce=challenge.nonce, algorithm="SHA-256"),
        username="alice",
        password=USERS["alice"],
        method="INVITE",
        uri=RURI,
        cnonce="c",
    )
    result = server.verify(bare, method="INVITE", now=T0, password_lookup=lookup)
    assert result.status is VerifyStatus.REPLAY


def test_replay_table_is_bounded_and_never_reopens_a_replay() -> None:
    server = make_server(max_tracked_nonces=2, nonce_lifetime=300.0)
    values = [answer(server, T0 + i) for i in range(3)]
    for i, value in enumerate(values):
        assert server.verify(value, method="INVITE", now=T0 + 10 + i, password_lookup=lookup).ok
    assert server.tracked_nonces == 2
    # The first nonce was pushed out while still valid: replaying it must not succeed.
    replay = server.verify(values[0], method="INVITE", now=T0 + 20, password_lookup=lookup)
    assert replay.status is VerifyStatus.STALE
    # The still-tracked ones keep their nc.
    replay = server.verify(values[2], method="INVITE", now=T0 + 20, password_lookup=lookup)
    assert replay.status is VerifyStatus.REPLAY


def test_expired_nonces_leave_the_replay_table() -> None:
    server = make_server(nonce_lifetime=60.0)
    for i in range(5):
        value = answer(server, T0 + i)
        assert server.verify(value, method="INVITE", now=T0 + i, password_lookup=lookup).ok
    assert server.tracked_nonces == 5
    value = answer(server, T0 + 120)
    assert server.verify(value, method="INVITE", now=T0 + 120, password_lookup=lookup).ok
    assert server.tracked_nonces == 1


# --------------------------------------------------------------------------- choosing


def test_server_offers_one_challenge_per_algorithm_strongest_first_rfc8760_2_4() -> None:
    server = make_server(algorithms=("MD5", "SHA-512-256", "SHA-256"))
    values = server.challenge(T0)
    parsed = [parse_challenge(v) for v in values]
    assert [c.algorithm for c in parsed] == ["SHA-512-256", "SHA-256", "MD5"]
    assert len({c.nonce for c in parsed}) == 1


def test_choose_challenge_prefers_strongest_rfc8760_2_4() -> None:
    offered = [
        Challenge(realm="r", nonce="1", algorithm="MD5", qop=("auth",)),
        Challenge(realm="r", nonce="2", algorithm="SHA-256", qop=("auth",)),
        Challenge(realm="r", nonce="3", algorithm="SHA-512-256", qop=("auth",)),
    ]
    for order in itertools.permutations(offered):
        assert choose_challenge(list(order)).algorithm == "SHA-512-256"
    assert choose_challenge(offered[:2]).algorithm == "SHA-256"


def test_choose_challenge_ignores_unsupported_rfc8760_2_4() -> None:
    offered = [
        Challenge(realm="r", nonce="1", algorithm="SHA-3-512", qop=("auth",)),
        Challenge(realm="r", nonce="2", algorithm="SHA-256", qop=("auth-conf",)),
        Challenge(realm="r", nonce="3", algorithm="MD5", qop=("auth",)),
    ]
    assert choose_challenge(offered).nonce == "3"
    with pytest.raises(NoUsableChallengeError, match="SHA-3-512"):
        choose_challenge(offered[:1])
    with pytest.raises(NoUsableChallengeError):
        choose_challenge([])


def test_choose_challenge_keeps_server_order_between_equals() -> None:
    offered = [
        Challenge(realm="r", nonce="1", algorithm="SHA-256-sess", qop=("auth",)),
        Challenge(realm="r", nonce="2", algorithm="SHA-256", qop=("auth",)),
    ]
    assert choose_challenge(offered).nonce == "1"


def test_choose_per_realm_answers_each_realm_rfc3261_22_3() -> None:
    offered = parse_challenges(
        [
            'Digest realm="a", nonce="1", algorithm=MD5',
            'Basic realm="a"',
            'Digest realm="b", nonce="2", algorithm=MD5, qop="auth"',
            'Digest realm="a", nonce="3", algorithm=SHA-256, qop="auth"',
        ]
    )
    assert [(c.realm, c.nonce) for c in choose_per_realm(offered)] == [("a", "3"), ("b", "2")]


# --------------------------------------------------------------------------- parsing


def test_parse_challenge_torture() -> None:
    value = (
        '  digest   REALM = "sip\\"proxy\\\\x" ,,  Nonce="n1, still n1",\t'
        'ALGORITHM = sha-256 , qop = "auth , Auth-Int," ,\r\n stale=true, '
        'domain="sip:a.example sip:b.example", opaque="", charset=UTF-8, x-unknown="v w"'
    )
    c = parse_challenge(value)
    assert c.realm == 'sip"proxy\\x'
    assert c.nonce == "n1, still n1"
    assert c.algorithm == "SHA-256"
    assert c.qop == ("auth", "auth-int")
    assert c.stale is True
    assert c.domain == ("sip:a.example", "sip:b.example")
    assert c.opaque == ""
    assert c.extra == {"charset": "UTF-8", "x-unknown": "v w"}


def test_parse_challenge_defaults() -> None:
    c = parse_challenge('Digest realm="r", nonce="n"')
    assert (c.algorithm, c.qop, c.opaque, c.stale, c.domain, c.extra) == (
        "MD5",
        (),
        None,
        False,
        (),
        {},
    )
    assert parse_challenge('Digest realm="r", nonce="n", stale=FALSE').stale is False


def test_format_challenge_round_trips() -> None:
    original = Challenge(
        realm='we "quote" \\ it',
        nonce="abc",
        algorithm="SHA-512-256-sess",
        qop=("auth", "auth-int"),
        opaque="op",
        stale=True,
        domain=("sip:a", "sip:b"),
        extra={"charset": "UTF-8", "note": "has space"},
    )
    assert parse_challenge(format_challenge(original)) == original


def test_format_credentials_round_trips() -> None:
    original = Credentials(
        username='a"b',
        realm="r",
        nonce="n",
        uri="sip:x@y;transport=tcp",
        response="00ff",
        algorithm="SHA-256",
        cnonce="c",
        nc="0000000a",
        qop="auth",
        opaque="o",
        extra={"userhash": "false"},
    )
    value = format_credentials(original)
    assert "qop=auth," in value and "nc=0000000a" in value
    assert parse_credentials(value) == original


def test_parse_credentials_accepts_quoted_qop_and_nc_and_lowercase_scheme() -> None:
    c = parse_credentials(
        'digest username="u",realm="r",nonce="n",uri="sip:x",response="ab",'
        'qop="auth",nc="00000001",cnonce="c",algorithm="md5-sess"'
    )
    assert (c.qop, c.nc, c.algorithm) == ("auth", "00000001", "MD5-sess")


def test_parse_credentials_username_star_rfc7616_3_4_4() -> None:
    c = parse_credentials(
        'Digest username*=UTF-8\'\'J%C3%A4s%C3%B8n%20Doe, realm="r", nonce="n", '
        'uri="/", response="ab"'
    )
    assert c.username == "J\u00e4s\u00f8n Doe"


def test_non_digest_scheme_is_reported() -> None:
    with pytest.raises(NotDigestError) as info:
        parse_credentials("Basic YWxhZGRpbjpvcGVuc2VzYW1l")
    assert info.value.scheme == "Basic"
    with pytest.raises(NotDigestError):
        parse_challenge('Bearer realm="x"')


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "scheme"),
        ("   ", "scheme"),
        ('Digest realm="r', "closing"),
        ('Digest realm="r\\', "closing"),
        ('Digest nonce="n"', "'realm' is missing"),
        ('Digest realm="r"', "'nonce' is missing"),
        ('Digest realm="r", realm="s", nonce="n"', "more than once"),
        ('Digest realm, nonce="n"', "'realm' has no '='"),
        ('Digest realm=, nonce="n"', "'realm' has an empty value"),
        ('Digest realm="r" nonce="n"', "expected ','"),
        ('Digest realm="r"; nonce="n"', "expected ','"),
        ('Digest @realm="r"', "unexpected character '@'"),
        ('Digest="r"', "space after 'Digest'"),
    ],
)
def test_malformed_challenges_raise_actionable_errors(value: str, fragment: str) -> None:
    with pytest.raises(DigestParseError, match=fragment) as info:
        parse_challenge(value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ParseError)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ('Digest realm="r", nonce="n", uri="/", response="ab"', "'username' is missing"),
        ('Digest username="u", realm="r", nonce="n", uri="/"', "'response' is missing"),
        (
            'Digest username="u", realm="r", nonce="n", uri="/", response="ab", qop=auth, nc=1, cnonce="c"',
            "8 hex digits",
        ),
        (
            'Digest username="u", realm="r", nonce="n", uri="/", response="ab", qop=auth',
            "requires both",
        ),
        (
            'Digest username="u", realm="r", nonce="n", uri="/", response="ab", algorithm=MD5-sess',
            "requires 'cnonce'",
        ),
        ('Digest username*=latin1\'\'x, realm="r", nonce="n", uri="/", response="ab"', "UTF-8"),
    ],
)
def test_malformed_credentials_raise_actionable_errors(value: str, fragment: str) -> None:
    with pytest.raises(DigestParseError, match=fragment):
        parse_credentials(value)


def test_no_secret_material_in_errors_or_repr() -> None:
    secret_response = "5ecre7c0ffee5ecre7c0ffee5ecre7ab"
    value = (
        f'Digest username="u", realm="r", nonce="n", uri="/", response="{secret_response}", '
        "qop=auth, nc=zz"
    )
    with pytest.raises(DigestParseError) as info:
        parse_credentials(value)
    assert secret_response not in str(info.value)
    creds = parse_credentials(value.replace("nc=zz", 'nc=00000001, cnonce="c"'))
    assert secret_response not in repr(creds)
    server = make_server()
    for password in ("guess", USERS["alice"]):
        bad = answer(server, T0, password=password)
        result = server.verify(bad, method="BYE", now=T0 + 1e6, password_lookup=lookup)
        response = parse_credentials(bad).response
        assert response not in result.reason and password not in result.reason
        assert password not in repr(result)


def test_server_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="16"):
        DigestServer(REALM, b"short")
    with pytest.raises(ValueError, match="SHA-1"):
        DigestServer(REALM, SECRET, algorithms=("SHA-1",))
    with pytest.raises(ValueError, match="qop"):
        DigestServer(REALM, SECRET, qop=("auth-conf",))
    server = DigestServer(REALM, SECRET, algorithms=("MD5",))
    with pytest.raises(ValueError, match="SHA-256"):
        server.challenge(T0, algorithms=("SHA-256",))
