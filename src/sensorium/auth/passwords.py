"""Password hashing with Argon2id (argon2-cffi); the cost comes from ``[auth]`` so tests can
make it cheap. A hash made with other parameters still verifies, and is re-hashed at the next
successful login (:meth:`Passwords.needs_rehash`)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from sensorium.config import AuthSettings
from sensorium.errors import BadRequest

MAX_PASSWORD = 1024


class Passwords:
    def __init__(self, settings: AuthSettings) -> None:
        self.min_length = settings.password_min_length
        self._ph = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        self._dummy: str | None = None

    def check_new(self, password: object) -> str:
        """A new password, or a 400 saying what is wrong with it."""
        if not isinstance(password, str):
            raise BadRequest("password must be a string")
        if len(password) < self.min_length:
            raise BadRequest(f"password too short: at least {self.min_length} characters")
        if len(password) > MAX_PASSWORD:
            raise BadRequest(f"password too long: at most {MAX_PASSWORD} characters")
        return password

    def hash(self, password: str) -> str:
        return self._ph.hash(self.check_new(password))

    def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored``. With no stored hash (an unknown user, a user
        without a password) a dummy hash is verified anyway, so timing does not tell them apart."""
        if len(password) > MAX_PASSWORD:
            return False
        if stored is None:
            if self._dummy is None:
                self._dummy = self._ph.hash("not a password: timing only")
            stored = self._dummy
            try:
                self._ph.verify(stored, password)
            except (VerificationError, InvalidHashError):
                pass
            return False
        try:
            return bool(self._ph.verify(stored, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return bool(self._ph.check_needs_rehash(stored))


__all__ = ["Passwords"]
