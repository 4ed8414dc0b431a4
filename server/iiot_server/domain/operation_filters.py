"""Which Provisioning Operations a batch approval or cancellation acts on (pure).

A filter's fields are AND-ed. A filter that narrows nothing is refused (400 naming
``filter``): a batch must never approve every pending operation by accident, so ``state``
alone does not count. Device ID fields match the Device ID as the technician sees it (not
its workspace key), case-sensitively on SQLite and PostgreSQL alike: the database narrows
with ``LIKE`` (case-insensitive on SQLite) and :meth:`OperationFilter.matches` decides.

>>> f = OperationFilter(device_id_pattern="line3-*-a?")
>>> f.matches("line3-0042-a1", {}), f.matches("LINE3-0042-a1", {}), f.matches("line3-a1", {})
(True, False, False)
>>> f.like_prefix()
'line3-'
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import datetime

from .errors import ValidationError
from .operations import OperationState
from .verification import format_verification_code, normalize_verification_code

MAX_BATCH = 1000
"""Operations one batch call acts on at most (and the most ids or codes a filter names):
500 approvals took ~0.5 s on SQLite (``benchmarks/batch_approval.py``), so a call stays
well inside an HTTP timeout on either database."""

_PREFIX = re.compile(r"[0-9A-Za-z_.\-]{1,90}")
_PATTERN = re.compile(r"[0-9A-Za-z_.\-*?]{1,90}")


@dataclass(frozen=True)
class OperationFilter:
    """A validated batch filter; ``None`` (or an empty ``attributes``) leaves a field out."""

    provisioning_token_id: str | None = None
    device_id_prefix: str | None = None
    device_id_pattern: str | None = None
    """A glob, as :func:`fnmatch.fnmatchcase`: ``*`` any run of characters, ``?`` one;
    no ``[...]`` classes (a Device ID holds no brackets)."""
    attributes: dict[str, str] = field(default_factory=dict)
    """Each key given must be present with exactly this value."""
    created_after: datetime | None = None
    """Created at or after (inclusive)."""
    created_before: datetime | None = None
    """Created before (exclusive), so consecutive windows neither overlap nor miss one."""
    ids: tuple[str, ...] | None = None
    verification_codes: tuple[str, ...] | None = None
    """Display form (``WDJB-MJHT``), normalised from whatever case and dashes were given."""
    state: OperationState | None = None

    @classmethod
    def validated(
        cls,
        *,
        provisioning_token_id: str | None = None,
        device_id_prefix: str | None = None,
        device_id_pattern: str | None = None,
        attributes: dict[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        ids: list[str] | None = None,
        verification_codes: list[str] | None = None,
        state: OperationState | None = None,
        states_allowed: tuple[OperationState, ...] = (
            OperationState.PENDING,
            OperationState.APPROVED,
        ),
    ) -> OperationFilter:
        """The filter, or :class:`ValidationError` naming the offending ``filter.<field>``
        (or ``filter`` itself when nothing narrows)."""
        if device_id_prefix is not None and not _PREFIX.fullmatch(device_id_prefix):
            raise ValidationError(
                "deviceIdPrefix must be 1-90 characters of 0-9 a-z A-Z - _ .",
                field="filter.deviceIdPrefix",
            )
        if device_id_pattern is not None and not _PATTERN.fullmatch(device_id_pattern):
            raise ValidationError(
                "deviceIdPattern must be a glob of 1-90 characters of 0-9 a-z A-Z - _ . "
                "with * (any run) and ? (one character)",
                field="filter.deviceIdPattern",
            )
        for name, value in (
            ("createdAfter", created_after),
            ("createdBefore", created_before),
        ):
            if value is not None and value.tzinfo is None:
                raise ValidationError(
                    f"{name} needs a time zone (e.g. 2026-01-01T08:00:00Z)",
                    field=f"filter.{name}",
                )
        if created_after and created_before and created_after >= created_before:
            raise ValidationError(
                "createdAfter must be before createdBefore", field="filter.createdBefore"
            )
        codes = None
        if verification_codes is not None:
            codes = tuple(
                format_verification_code(
                    normalize_verification_code(code, field=f"filter.verificationCodes[{i}]")
                )
                for i, code in enumerate(verification_codes)
            )
        if state is not None and state not in states_allowed:
            allowed = " or ".join(s.value for s in states_allowed)
            raise ValidationError(
                f"state must be {allowed} here (the states this batch acts on)",
                field="filter.state",
            )
        made = cls(
            provisioning_token_id=provisioning_token_id,
            device_id_prefix=device_id_prefix,
            device_id_pattern=device_id_pattern,
            attributes=dict(attributes or {}),
            created_after=created_after,
            created_before=created_before,
            ids=None if ids is None else tuple(dict.fromkeys(ids)),
            verification_codes=None if codes is None else tuple(dict.fromkeys(codes)),
            state=state,
        )
        if not made.narrows:
            raise ValidationError(
                "the filter narrows nothing: give at least one of provisioningTokenId, "
                "deviceIdPrefix, deviceIdPattern, attributes, createdAfter, createdBefore, "
                "ids, verificationCodes (state alone would act on every operation)",
                field="filter",
            )
        return made

    @property
    def narrows(self) -> bool:
        """Whether a field other than ``state`` is given (an empty ``ids`` list narrows to
        nothing, which is safe)."""
        return any(
            (
                self.provisioning_token_id is not None,
                self.device_id_prefix is not None,
                self.device_id_pattern is not None,
                bool(self.attributes),
                self.created_after is not None,
                self.created_before is not None,
                self.ids is not None,
                self.verification_codes is not None,
            )
        )

    @property
    def names_operations(self) -> bool:
        """``ids`` or ``verificationCodes`` given: each named one is reported, even when it
        is in a state the batch does not act on (skipped, with the reason)."""
        return self.ids is not None or self.verification_codes is not None

    def like_prefix(self) -> str | None:
        """The literal start every matching Device ID has, for the database to narrow by
        (``LIKE 'prefix%'``); None: nothing to narrow by."""
        starts = [self.device_id_prefix or ""]
        if self.device_id_pattern is not None:
            starts.append(re.split(r"[*?]", self.device_id_pattern, maxsplit=1)[0])
        longest = max(starts, key=len)
        # both must be prefixes of one another's run to match anything; the longer decides
        return longest or None

    def matches(self, device_id: str | None, attributes: dict[str, str]) -> bool:
        """The exact (case-sensitive) Device ID and attribute checks."""
        if self.device_id_prefix is not None or self.device_id_pattern is not None:
            if device_id is None:
                return False
            if self.device_id_prefix is not None and not device_id.startswith(
                self.device_id_prefix
            ):
                return False
            if self.device_id_pattern is not None and not fnmatch.fnmatchcase(
                device_id, self.device_id_pattern
            ):
                return False
        return all(attributes.get(k) == v for k, v in self.attributes.items())
