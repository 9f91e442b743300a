"""New M3 customers being created: claimed before CRS610MI/Add, recorded once M3 answered with the number.

One row per QuoteWerks party identity. The fields sent are kept with the claim, so whoever resumes a creation (the
same worker after a crash, or another replica once the claim's holder is silent past `hold_s`) reads M3 for exactly
the customer that Add would have made (CRS610MI/LstByName) before sending Add again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from shared.platform.state.ledger import EntryBusyError
from shared.platform.state.models import CustomerCreation

PENDING = "pending"
CREATED = "created"


def shown(identity: str) -> str:
    """A party identity as messages and logs may carry it: an e-mail address (personal data) as a short digest."""
    if identity.startswith("email:"):
        return f"e-mail #{hashlib.sha256(identity.encode()).hexdigest()[:10]}"
    return identity


@dataclass(frozen=True)
class CreationClaim:
    fields: dict[str, str]
    #: An earlier claim existed: its CRS610MI/Add may have reached M3.
    resumed: bool
    m3_customer_number: str | None = None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def find(engine: AsyncEngine, identity: str) -> CustomerCreation | None:
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        return await session.get(CustomerCreation, identity[:300])


async def claim(
    engine: AsyncEngine, identity: str, fields: Mapping[str, str], *, owner: str, hold_s: float
) -> CreationClaim:
    """Claim the creation for `owner`: a new claim with `fields`, or the existing one (its fields, `resumed`).
    Raises EntryBusyError (retryable) while another owner's claim is younger than `hold_s`."""
    now = datetime.now(UTC)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False).begin() as session:
            row = await session.get(CustomerCreation, identity[:300], with_for_update=True)
            if row is None:
                session.add(CustomerCreation(identity=identity[:300], state=PENDING, fields=json.dumps(dict(fields)),
                                             owner=owner, claimed_at=now))  # fmt: skip
                return CreationClaim(dict(fields), resumed=False)
            recorded: dict[str, str] = json.loads(row.fields)
            if row.state == CREATED and row.m3_customer_number:
                return CreationClaim(recorded, resumed=True, m3_customer_number=row.m3_customer_number)
            if row.owner != owner and _aware(row.claimed_at) + timedelta(seconds=hold_s) > now:
                raise EntryBusyError(f"customer {shown(identity)} is being created by {row.owner}")
            row.owner, row.claimed_at = owner, now
            return CreationClaim(recorded, resumed=True)
    except IntegrityError:
        raise EntryBusyError(f"customer {shown(identity)} is being created by another worker") from None


async def created(engine: AsyncEngine, identity: str, number: str) -> None:
    async with async_sessionmaker(engine).begin() as session:
        row = await session.get(CustomerCreation, identity[:300], with_for_update=True)
        if row is not None:
            row.state, row.m3_customer_number = CREATED, number
