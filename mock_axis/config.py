"""Configuration of the mock national axis (a TOML file) and the faults a test can switch on.

The file lists the systems connected to the axis: each a ``system_id`` and ``secret`` (the SDK's
``VnptProperties``) and the organisations it ``serves``, which is how the mock routes a document::

    database = "sqlite+aiosqlite:///demo-out/mock-axis.db"

    [[systems]]
    system_id = "000.00.90.H99"
    secret = "..."                  # 16 bytes or more, unless the mock listens on loopback only
    name = "Trục liên thông tỉnh Mẫu"
    serves = ["000.00.00.H99"]      # this OrganId and everything within it

    [[agencies]]                    # optional: the directory getAgenciesList starts with
    code = "000.00.00.H99"
    name = "Ủy ban nhân dân tỉnh Mẫu"
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from bus.errors import ConfigError
from bus.organ_id import OrganId

__all__ = ["AgencySeed", "AxisSystem", "MockAxisConfig", "MockFaults", "load_mock_config"]

DEFAULT_DATABASE = "sqlite+aiosqlite:///demo-out/mock-axis.db"
MIN_SECRET_BYTES = 16


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AxisSystem(_Strict):
    """A system connected to the axis (a province's bus, a ministry's): its credentials, and the
    organisations it serves (an OrganId is served if it equals an entry or lies within one)."""

    system_id: str = Field(min_length=1)
    secret: SecretStr
    name: str = ""
    serves: tuple[OrganId, ...] = Field(min_length=1)

    @property
    def weak_secret(self) -> str | None:
        """Why the secret is too weak to face a network, or None. The mock still starts with one on a
        loopback address (integrators' fixtures carry short secrets, issue 13), see ``serve_mock_axis``."""
        size = len(self.secret.get_secret_value().encode("utf-8"))
        if size >= MIN_SECRET_BYTES:
            return None
        return (
            f"the secret of {self.system_id} is shorter than {MIN_SECRET_BYTES} bytes "
            "(a short secret lets anyone sign as it)"
        )

    def entry_for(self, organ: OrganId) -> OrganId | None:
        """The most specific ``serves`` entry that *organ* falls within."""
        within = [s for s in self.serves if organ.is_within(s)]
        return max(within, key=lambda s: s.level) if within else None


class AgencySeed(_Strict):
    """An agency put in the directory at start-up (unless already there)."""

    code: str = Field(min_length=1)
    name: str = Field(min_length=1)
    pcode: str = ""
    mail: str = ""
    mobile: str = ""
    fax: str = ""
    old_code: str = ""


class MockAxisConfig(_Strict):
    """The whole file. Routing must be unambiguous: one OrganId is never listed by two systems (a
    nested entry is fine: the most specific one wins)."""

    systems: tuple[AxisSystem, ...] = Field(min_length=1)
    database: str = DEFAULT_DATABASE
    agencies: tuple[AgencySeed, ...] = ()
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)

    @model_validator(mode="after")
    def _unambiguous(self) -> MockAxisConfig:
        seen: set[str] = set()
        served: dict[OrganId, str] = {}
        for system in self.systems:
            if system.system_id in seen:
                raise ValueError(f"system_id {system.system_id} is listed twice")
            seen.add(system.system_id)
            for organ in system.serves:
                if organ in served:
                    raise ValueError(f"{organ} is served by both {served[organ]} and {system.system_id}")
                served[organ] = system.system_id
        return self

    def system(self, system_id: str) -> AxisSystem | None:
        return next((s for s in self.systems if s.system_id == system_id), None)

    def secret_of(self, system_id: str) -> str | None:
        system = self.system(system_id)
        return None if system is None else system.secret.get_secret_value()

    def serving(self, organ: OrganId) -> AxisSystem | None:
        """The system a document for *organ* goes to: the one with the most specific entry."""
        candidates = [(entry, s) for s in self.systems if (entry := s.entry_for(organ)) is not None]
        return max(candidates, key=lambda c: c[0].level)[1] if candidates else None


def load_mock_config(path: Path) -> MockAxisConfig:
    """Read the mock's TOML file; :class:`ConfigError` names the field and the reason."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return MockAxisConfig(**data)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read mock axis configuration {path}: {exc}") from exc
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"mock axis configuration {path} is invalid: {reasons}") from exc


# -- faults ------------------------------------------------------------------------------------------


class MockFaults(BaseModel):
    """Faults a test switches on. Counters (``fail_next``, ``accept_then_lose``) count down per use.

    ``down``: every operation answers 503. ``slow_s``: wait this long before answering.
    ``fail_next``: the next N requests answer 500. ``accept_then_lose``: the next N sendEdoc answer OK
    with a DocId but store nothing. ``duplicate_delivery``: getReceivedEdocList lists every item twice,
    and an item marked done comes back once more. ``reorder``: the received list newest first.

    A stricter axis (:mod:`mock_axis.freshness`; the real one's rules are unknown, and by default the
    mock accepts any timestamp, as the SDK stamps once per service object): ``freshness_window_s``
    (0: off) refuses, 401, a timestamp further than that from the mock's clock; ``nonce_memory``
    refuses, 401, a request whose signed headers were already accepted."""

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    down: bool = False
    slow_s: float = Field(default=0.0, ge=0, le=600)
    fail_next: int = Field(default=0, ge=0)
    accept_then_lose: int = Field(default=0, ge=0)
    duplicate_delivery: bool = False
    reorder: bool = False
    freshness_window_s: float = Field(default=0.0, ge=0, le=366 * 86400)
    nonce_memory: bool = False

    def reset(self) -> None:
        for name, field in type(self).model_fields.items():
            setattr(self, name, field.default)

    def take(self, counter: Literal["fail_next", "accept_then_lose"]) -> bool:
        """Use one of *counter*; False when it is already zero."""
        left: int = getattr(self, counter)
        if left > 0:
            setattr(self, counter, left - 1)
        return left > 0
