"""The M3 customer of a quote's sold-to party: linked, else found by e-mail or name, else created (CRS610MI)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy.ext.asyncio import AsyncEngine

from services.order_writer import customer_creations
from services.order_writer.refusals import HoldError, RejectedError
from services.order_writer.verified_writes import PRIORITY, Guard, no_guard, text, write_verified
from shared.contracts import Problem, QuoteApproved
from shared.customers import clean
from shared.customers.matching import CustomerFacts, Matcher, MatchingRules
from shared.m3 import M3BusinessError, M3Client
from shared.mapping import MappingRules, country_table, plan_customer
from shared.platform.crash_points import crash_point
from shared.platform.state import ledger

log = logging.getLogger(__name__)

#: Input field lengths from M3's API repository by "PROGRAM/Transaction", read only when a customer is to be created.
FieldLengths = Callable[[], Awaitable[Mapping[str, Mapping[str, int]]]]


class QuoteCustomers:
    """Finds or creates the M3 customer of a quote, and links it in the ledger so the next quote finds it there."""

    def __init__(
        self,
        m3: M3Client,
        engine: AsyncEngine,
        rules: MappingRules,
        lengths: FieldLengths,
        *,
        settle_s: float,
        claim_hold_s: float = 300.0,
        matching: MatchingRules | None = None,
    ) -> None:
        self.matching = matching or MatchingRules()
        self.claim_hold_s = claim_hold_s
        self.m3 = m3
        self.engine = engine
        self.rules = rules
        self.lengths = lengths
        self.settle_s = settle_s

    async def customer(self, quote: QuoteApproved, *, guard: Guard = no_guard, owner: str = "") -> str:
        """The M3 customer number for the quote's sold-to party, creating the customer when M3 lacks it.

        A creation is claimed (pending, with the fields to send) before CRS610MI/Add and recorded (created, with the
        number) right after, so a crash in between, or a second quote of the same new customer on another
        partition, resumes that one creation (an exact read of what was sent) instead of adding a second
        customer; while another worker's claim is fresh, this quote waits (retryable)."""
        party = quote.sold_to
        identity = party.cm_account_no or (f"email:{party.email.casefold()}" if party.email else "")
        identity = identity or f"company:{party.company.casefold()}"
        link = await ledger.customer_link(self.engine, identity)
        if link is not None:
            return link.m3_customer_number
        creation = await customer_creations.find(self.engine, identity)
        number = creation.m3_customer_number if creation is not None else None
        if number is None and creation is None:
            number = await self.existing(quote)
        if number is None:
            plan = plan_customer(quote, self.rules, field_lengths=await self.lengths())
            if plan.refusals:
                raise HoldError([
                    Problem(error_class="mapping", message=f"customer {r.field}: {r.reason}"[:2000], field=r.field[:32])
                    for r in plan.refusals
                ])  # fmt: skip
            claim = await customer_creations.claim(
                self.engine, identity, plan.fields, owner=owner or "order-writer", hold_s=self.claim_hold_s
            )
            number = claim.m3_customer_number
            if number is None and claim.resumed:
                number = await self._created(claim.fields)  # an earlier attempt may have sent Add: read for it
            if number is None:
                await crash_point("order-writer.after-customer-claim")
                await guard()
                number = await self._create(claim.fields, guard)
                await crash_point("order-writer.after-customer-add")
                log.info("created M3 customer %s for %s", number, party.company)
            await customer_creations.created(self.engine, identity, number)
        await ledger.link_customer(
            self.engine, identity, number, email=party.email, company=party.company, by="m3bridge"
        )
        return number

    async def existing(self, quote: QuoteApproved) -> str | None:
        party = quote.sold_to
        if party.cm_account_no and len(party.cm_account_no) <= 10:
            # Sites that key QuoteWerks customers by their M3 number: take it when M3 knows it.
            try:
                record = await self.m3.execute_one(
                    "CRS610MI", "GetBasicData", {"CUNO": party.cm_account_no}, priority=PRIORITY
                )
            except M3BusinessError:
                record = None
            if record is not None:
                return str(record["CUNO"])
        # Deduplicate: M3's search by e-mail and by name gives the candidates; the matching keys of
        # customer-sync.yaml decide among them. Several alike hold the quote for a person: never a guess.
        found: dict[str, Mapping[str, object]] = {}
        for query in (party.email, party.company):
            if query:
                rows = await self.m3.execute("CRS610MI", "SearchCustomer", {"SQRY": query[:100]}, priority=PRIORITY)
                found.update({text(row, "CUNO"): row for row in rows if text(row, "CUNO")})
        if not found:
            return None
        country = clean(party.country)
        table = country_table(self.rules)
        facts = CustomerFacts(
            id=party.cm_account_no, name=party.company, email=party.email, postal_code=party.postal_code,
            country=(table.resolve(country) if table is not None and country else None) or country,
        )  # fmt: skip
        pool = [
            CustomerFacts(
                number, text(row, "CUNM"), text(row, "MAIL"), text(row, "PONO"), text(row, "CSCD"), text(row, "VRNO")
            )
            for number, row in found.items()
        ]
        result = Matcher(pool, self.matching).match(facts)
        if result.status == "several":
            candidates = ", ".join(result.matches[:5])
            raise HoldError([
                Problem(
                    error_class="business",
                    message=f"customer {party.company!r} matches {len(result.matches)} M3 customers by {result.key} "
                    f"({candidates}): link the right one (m3bridge customers link QUOTEWERKS_ID M3_NUMBER) and "
                    "replay the quote",
                )
            ])  # fmt: skip
        return result.matches[0] if result.status == "one" else None

    async def _create(self, fields: Mapping[str, str], guard: Guard = no_guard) -> str:
        """CRS610MI/Add; after a lost answer, the customer is looked up by the name and address sent."""

        async def add() -> str:
            created = await self.m3.execute_one("CRS610MI", "Add", fields, priority=PRIORITY)
            number = text(created, "CUNO") or fields.get("CUNO", "")
            if not number:
                raise RejectedError([Problem(error_class="business", message="CRS610MI/Add returned no CUNO")])
            return number

        return await write_verified("Add", add, lambda: self._created(fields), settle_s=self.settle_s, guard=guard)

    async def _created(self, fields: Mapping[str, str]) -> str | None:
        """The customer a CRS610MI/Add with `fields` created, if any. LstByName reads the customer table itself
        (SearchCustomer goes through a search index that may not have it yet)."""
        if fields.get("CUNO"):
            try:
                found = await self.m3.execute_one(
                    "CRS610MI", "GetBasicData", {"CUNO": fields["CUNO"]}, priority=PRIORITY
                )
            except M3BusinessError:
                return None
            return text(found, "CUNO") or None
        name = fields.get("CUNM", "")
        wanted = {code: fields[code].casefold() for code in ("MAIL", "CUA1", "PONO") if fields.get(code)}
        matches: list[str] = []
        async for row in self.m3.list_all(
            "CRS610MI", "LstByName", {"CUNM": name}, key_fields=("CUNM", "CUNO"), priority=PRIORITY
        ):
            if text(row, "CUNM").casefold() != name.casefold():
                break
            if all(text(row, code).casefold() == value for code, value in wanted.items()):
                matches.append(text(row, "CUNO"))
        if len(matches) > 1:
            log.warning("customer %r exists %d times in M3 (%s): taking %s", name, len(matches), matches, min(matches))
        return min(matches) if matches else None
