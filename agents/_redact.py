"""Secrets kept out of what concilium writes: traces, state files, events, errors, logs.

An ``api_base`` may carry a password (``http://user:PASS@host/v1``) or a key in its
query (``?api-key=...``), and a server's error body may echo the ``Authorization``
header it was sent. :func:`redact` masks those wherever a URL or a server's words
are about to be written down; :func:`scrub` also shortens a server's body;
:func:`private_file` creates a file only its owner can read (trace and state files).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MASK = "***"

# Query parameters (and key=value pairs in text) whose value is a credential.
_KEY_NAMES = (
    r"api[-_]?key|x[-_]api[-_]key|key|token|access[-_]token|refresh[-_]token|id[-_]token|"
    r"auth|authorization|sig|signature|secret|client[-_]secret|password|passwd|pwd"
)
# scheme://user:password@  or  scheme://token@  (userinfo stops at / ? # @ or space)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/?#@\s:\\\"']*)(?::([^/?#@\s\\\"']*))?@")
# ?key=value / &key=value / key=value in text (stops at & # whitespace, quotes and
# backslashes, so a URL inside a JSON string stays valid JSON)
_QUERY = re.compile(rf"(?i)(?<![\w-])({_KEY_NAMES})=([^&#\s\"'<>\\]+)")
# "api_key": "value" in a JSON body a server echoed back
_JSON_FIELD = re.compile(rf"(?i)(\"(?:{_KEY_NAMES})\"\s*:\s*\")((?:[^\"\\]|\\.)*)(\")")
# Authorization: Bearer <token>, and OpenAI-style sk-... keys
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=-]+")
_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{12,}")


def _userinfo(match: re.Match[str]) -> str:
    scheme, user, password = match.group(1), match.group(2), match.group(3)
    if password is None:  # a lone userinfo is usually a token (https://TOKEN@host)
        return f"{scheme}{MASK}@"
    return f"{scheme}{user}:{MASK}@"


def redact(text: str | None) -> str:
    """``text`` (a URL, an error message, a server's body) with its credentials masked.

    Masks the password of a URL's userinfo (a lone userinfo entirely), the values of
    key-like query parameters (``api-key``, ``api_key``, ``key``, ``token``,
    ``access_token``, ``sig``, ...), ``"api_key": "..."`` fields, ``Bearer`` tokens
    and ``sk-...`` keys. ``None`` gives ``""``.

    Example:
        >>> redact("http://user:PASS@127.0.0.1:8000/v1?api-key=SECRET&x=1")
        'http://user:***@127.0.0.1:8000/v1?api-key=***&x=1'
        >>> redact("401: bad header 'Authorization: Bearer abc.def'")
        "401: bad header 'Authorization: Bearer ***'"
    """
    if not text:
        return ""
    text = _USERINFO.sub(_userinfo, text)
    text = _QUERY.sub(rf"\1={MASK}", text)
    text = _JSON_FIELD.sub(rf"\1{MASK}\3", text)
    text = _BEARER.sub(rf"\1\2{MASK}", text)
    return _SK_KEY.sub(f"sk-{MASK}", text)


def scrub(body: str, limit: int = 300) -> str:
    """A server's error body fit to show: credentials masked, at most ``limit``
    characters (then ``...``), surrounding whitespace removed.

    Example:
        >>> scrub("token=abc " + "x" * 400, limit=20)
        'token=*** xxxxxxxxxx...'
    """
    text = redact(body.strip())
    return text if len(text) <= limit else text[:limit] + "..."


def private_file(path: str | Path) -> Path:
    """Create ``path`` (and its folder) readable by its owner only (mode 0600), unless
    it exists; returns it. Trace and state files go through this before a library
    opens them, since they hold prompts, answers and server addresses.

    Example:
        >>> import os, tempfile
        >>> path = private_file(os.path.join(tempfile.mkdtemp(), "run.db"))
        >>> oct(path.stat().st_mode & 0o777)
        '0o600'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    os.close(fd)
    return path
