"""Teacher and admin accounts: password hashing (argon2id) and creation, used by API and CLI."""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from classpulse.db import PasswordLink, User, utcnow

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the email is unknown, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash("not-a-real-password")

MIN_PASSWORD_LENGTH = 10
PASSWORD_LINK_TTL = timedelta(hours=24)
MAX_DISPLAY_NAME = 200


class AccountError(ValueError):
    pass


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if any(unicodedata.category(ch)[0] == "C" for ch in email):
        # Control and format characters (bidi overrides, zero-width): the email's first part is
        # the display name students see until one is set.
        raise AccountError("not an email address: it contains a control or invisible character")
    if "@" not in email or len(email) > 320 or email.startswith("@") or email.endswith("@"):
        raise AccountError(f"not an email address: {email!r}")
    return email


def create_user(
    db: Session, email: str, password: str, role: str = "teacher", display_name: str = ""
) -> User:
    """Create an account; raise AccountError for a taken email, weak password or bad role."""
    if role not in ("teacher", "admin"):
        raise AccountError(f"role must be teacher or admin, not {role!r}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    email = normalise_email(email)
    if db.scalar(select(User.id).where(User.email == email)) is not None:
        raise AccountError(f"an account for {email} already exists")
    user = User(
        email=email,
        password_hash=hash_password(password),
        role=role,
        display_name=display_name or email.split("@")[0],
    )
    db.add(user)
    db.flush()
    return user


def set_password(user: User, password: str) -> None:
    """Replace the password; the caller revokes the account's tokens (revoke_tokens)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    user.password_hash = hash_password(password)


def revoke_tokens(user: User) -> None:
    """End every access token issued to this account so far (they carry the old version).

    Incremented in SQL, not from the loaded value: two revocations at once (a password change
    and a link redeemed) must give two new versions, not one. Read it back after the commit."""
    user.token_version = User.token_version + 1


def void_password_links(db: Session, user: User) -> None:
    """Unused set-password links made for or by ``user`` stop working: called when the account
    is deactivated or demoted, so that a link an admin made before losing the role cannot bring
    it back (nor an old link revive a reactivated account)."""
    db.execute(
        update(PasswordLink)
        .where(
            PasswordLink.used_at.is_(None),
            (PasswordLink.user_id == user.id) | (PasswordLink.created_by_id == user.id),
        )
        .values(used_at=utcnow())
    )


def active_admins(db: Session) -> int:
    return int(
        db.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == "admin", User.active.is_(True))
        )
        or 0
    )


def admin_exists(db: Session) -> bool:
    return bool(db.scalar(select(func.count()).select_from(User).where(User.role == "admin")))


def authenticate(db: Session, email: str, password: str) -> User | None:
    try:
        email = normalise_email(email)
    except AccountError:
        email = ""
    user = db.scalar(select(User).where(User.email == email, User.active.is_(True)))
    if not verify_password(user.password_hash if user else None, password):
        return None
    return user


def set_display_name(user: User, name: str) -> None:
    """The name students see as "Teacher: ..."; empty means the email's local part again."""
    name = name.strip()
    if len(name) > MAX_DISPLAY_NAME:
        raise AccountError(f"display name: at most {MAX_DISPLAY_NAME} characters")
    user.display_name = name or user.email.split("@")[0]


def _token_hash(token: str) -> str:
    # The token has 256 random bits: a plain SHA-256 is enough (nothing to brute-force), and it
    # lets the link be found by an indexed lookup, which a salted argon2 hash would not.
    return hashlib.sha256(token.encode()).hexdigest()


def issue_password_link(
    db: Session, user: User, by: User | None, ttl: timedelta = PASSWORD_LINK_TTL
) -> tuple[str, datetime]:
    """A new one-time set-password token for ``user`` and when it expires; the account's
    earlier unused links end. Only its hash is stored (the caller commits)."""
    now = utcnow()
    db.execute(
        update(PasswordLink)
        .where(PasswordLink.user_id == user.id, PasswordLink.used_at.is_(None))
        .values(used_at=now)
    )
    token = secrets.token_urlsafe(32)
    expires = now + ttl
    db.add(
        PasswordLink(
            user_id=user.id,
            token_hash=_token_hash(token),
            expires_at=expires,
            created_by_id=by.id if by is not None else None,
        )
    )
    db.flush()
    return token, expires


def redeem_password_link(db: Session, token: str, password: str) -> User:
    """Set the password of the link's account and use the link up (once only, before it
    expires); the caller revokes the account's tokens and commits."""
    link = db.scalar(
        select(PasswordLink).where(PasswordLink.token_hash == _token_hash(token)).with_for_update()
    )
    now = utcnow()
    if link is None or link.used_at is not None:
        raise AccountError("this set-password link is not valid (or was used already)")
    if link.expires_at <= now:
        raise AccountError("this set-password link has expired: ask an admin for a new one")
    user = db.get(User, link.user_id)
    if user is None or not user.active:
        raise AccountError("this account is deactivated: ask an admin")
    maker = db.get(User, link.created_by_id) if link.created_by_id is not None else None
    if link.created_by_id is not None and (
        maker is None or not maker.active or maker.role != "admin"
    ):
        # Made by an admin who is no longer one (None: made on the command line).
        raise AccountError("this set-password link is not valid any more: ask an admin")
    set_password(user, password)  # the policy first: a refused password leaves the link usable
    link.used_at = now
    return user
