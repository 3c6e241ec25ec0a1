"""Teacher and admin accounts: password hashing (argon2id) and creation, used by API and CLI."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from classpulse.db import User

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the email is unknown, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash("not-a-real-password")

MIN_PASSWORD_LENGTH = 10


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
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in email):
        raise AccountError("not an email address: it contains a control character")
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
    """End every access token issued to this account so far (they carry the old version)."""
    user.token_version = (user.token_version or 0) + 1


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
