"""Drafts: the invoice for the period containing an instant, recomputed from the ledger.

Also the rated periods of a customer (finalized or drafted) and its events per day, for
reports.

Invariants: a finalized period's draft is its stored document, byte for byte; an open
period is rated through the current cut with the late adjustments so far; the open
periods ``rated_periods`` reads at once (``period_reads``) equal each customer's own
read. Nothing is stored.
"""

from __future__ import annotations

from meterline.billing import balances, buckets, closed_buckets, documents, late
from meterline.billing.context import BillingContext, Loaded, billing_cycle, cost_meters
from meterline.billing.documents import credit_cuts, rating_of
from meterline.billing.errors import BillingError, NotFound
from meterline.billing.period_reads import OpenPeriod, PeriodRead, local_days, period_buckets
from meterline.billing.scan import RatingJob, run_jobs
from meterline.core.buckets import bucket_rater
from meterline.core.cuts import Cut
from meterline.core.documents import Invoice
from meterline.core.model import Contract, segments
from meterline.core.periods import period_containing
from meterline.core.rating import Rater
from meterline.ledger import bucket_records, event_reads
from meterline.ledger.billing_records import StoredInvoice


def draft(
    context: BillingContext,
    customer: str,
    at_us: int | None = None,
    from_buckets: bool = False,
    read: PeriodRead | None = None,
    invoices: list[StoredInvoice] | None = None,
) -> Invoice:
    """The invoice for the period containing ``at_us`` (now), recomputed from the
    ledger as it stands: usage, fees, and adjustments for late events so far. With
    ``from_buckets``, usage is priced from the rated-usage buckets when they are built
    (``billing.buckets``: the same amounts, no Merkle roots) instead of re-rated;
    ``read``: the period's buckets already read (``period_buckets``, caught up);
    ``invoices``: the customer's period invoices already read (``rated_periods``)."""
    loaded = context.current()
    contract = context.contract(loaded, customer)
    at = context.clock() if at_us is None else at_us
    period = period_containing(billing_cycle(loaded.configuration, contract), at)
    own = context.period_invoices(customer) if invoices is None else invoices
    for stored in own:
        if stored.period_start_us == period.start_us:  # ``context.finalized``
            return stored.record
    spans = segments(loaded.configuration, contract, period.start_us, period.end_us)
    if not spans:
        raise NotFound(f"customer {customer!r} has no contract in force in that period")
    through = context.ledger_cut()
    inputs = balances.credit_inputs(context, loaded.configuration, contract, period.end_us - 1)
    job = RatingJob(
        customer,
        period,
        spans,
        through,
        loaded.configuration,
        cuts=credit_cuts(inputs, period, contract.timezone),
    )
    pending = late.late_jobs(context, [job], through, invoices=own)
    if from_buckets and read is None:
        buckets.ensure_built(context)  # once per revision, on first use
    rated = _job_rater(context, job, loaded, read) if from_buckets else None
    if rated is not None:
        job.rater = rated
    run_jobs(
        context.connection, [*([] if rated is not None else [job]), *[j for _, _, j, _ in pending]]
    )
    with rating_of(customer):
        adjustments = late.late_adjustments(context, pending).get(customer, [])
        credit = None
        if job.cuts is not None:
            prior = balances.prior_charges(context, loaded.configuration, contract, period, through)
            credit = balances.credit_part(context, job, loaded.configuration, inputs, prior)
        return documents.invoice_document(
            context,
            job,
            loaded.configuration,
            loaded.revision,
            loaded.content_sha256,
            None,
            None,
            adjustments,
            credit,
        )


def rated_periods(
    context: BillingContext,
    at_us: int | None = None,
    customer: str | None = None,
    from_buckets: bool = False,
) -> list[tuple[Invoice, RatingJob]]:
    """Every finalized period invoice (as billed) and every customer's open period (its
    draft as of ``at_us``, now), each with a job that re-rated it keeping its events
    and measuring the cost-only meters too: what unit economics is computed from. With
    ``from_buckets``, open periods are read from the buckets (``job.days`` set) when
    they are built, and so are finalized periods whose buckets hold exactly the events
    they billed (``_finalized_from_buckets``); the open periods' buckets are read in one
    statement for every customer (``period_reads.period_buckets``), and so are the
    finalized periods' of each billing period, what each customer's own read (``draft``
    alone, ``_finalized_one``) gives. The period invoices are read once."""
    at = context.clock() if at_us is None else at_us
    invoices = context.period_invoices(customer)
    pairs: list[tuple[StoredInvoice, RatingJob]] = []
    for stored in invoices:
        if stored.finalized_at_us > at:
            continue
        pairs.append((stored, finalized_job(context, stored)))
    if from_buckets:
        _finalized_from_buckets(context, pairs)
    rated = [(stored.record, job) for stored, job in pairs]
    current = context.load()
    if current is not None:
        rated += _open_periods(context, current, at, customer, from_buckets, invoices)
    run_jobs(context.connection, [job for _, job in rated if job.days is None])
    return rated


def finalized_job(context: BillingContext, stored: StoredInvoice) -> RatingJob:
    """A finalized period's re-rating job as billed (its revision, its invoice's cut),
    keeping its events and measuring the cost-only meters too (not yet rated)."""
    job, _ = late.rerate(
        context,
        stored,
        late.stored_invoice_cut(context, stored),
        keep_events=True,
        also_meters=cost_meters(context.load(stored.revision)),
    )
    return job


def _open_periods(
    context: BillingContext,
    loaded: Loaded,
    at: int,
    customer: str | None,
    from_buckets: bool,
    invoices: list[StoredInvoice],
) -> list[tuple[Invoice, RatingJob]]:
    """Each customer's open period as of ``at`` (of ``customer`` only when given): its
    draft, and a job holding its usage with the cost-only meters (rated later, unless
    read from the buckets). ``invoices``: the period invoices (of ``customer``), read
    once for every customer's draft."""
    head = context.ledger_cut()
    invoices_of: dict[str, list[StoredInvoice]] = {}
    for stored in invoices:
        invoices_of.setdefault(stored.customer, []).append(stored)
    chosen: list[OpenPeriod] = []
    for contract in loaded.configuration.contracts:
        if customer is not None and contract.customer != customer:
            continue
        if contract.start_us > at:
            continue
        period = period_containing(billing_cycle(loaded.configuration, contract), at)
        own = invoices_of.get(contract.customer, [])
        if any(stored.period_start_us == period.start_us for stored in own):
            continue
        spans = segments(loaded.configuration, contract, period.start_us, period.end_us)
        if spans:
            chosen.append((contract, period, spans))
    found = period_buckets(context, loaded, chosen) if from_buckets else {}
    pairs: list[tuple[Invoice, RatingJob]] = []
    for contract, period, spans in chosen:
        known = found.get(contract.customer)
        try:
            own = invoices_of.get(contract.customer, [])
            document = draft(context, contract.customer, at, from_buckets, known, own)
        except BillingError:
            continue
        job = RatingJob(
            contract.customer,
            period,
            spans,
            head,
            loaded.configuration,
            keep_events=True,
            also_meters=cost_meters(loaded),
        )
        if from_buckets:
            _from_buckets(context, job, loaded, contract.timezone, known)
        pairs.append((document, job))
    return pairs


def _job_rater(
    context: BillingContext, job: RatingJob, loaded: Loaded, read: PeriodRead | None
) -> Rater | None:
    """``buckets.job_rater`` (from ``read`` when given): without credit windows, the
    rater of ``read``'s merged lines (what ``priced_rater`` makes of them)."""
    if read is None:
        return buckets.job_rater(context, job, loaded)
    if job.cuts is None:
        return bucket_rater(read.scope, read.lines)
    return buckets.job_rater(context, job, loaded, read.found())


def event_days(
    context: BillingContext, customer: str, start_us: int, end_us: int
) -> dict[int, int]:
    """Each of the customer's events in [start, end): its sequence (within the
    customer's partition) and timestamp."""
    return event_reads.customer_event_times(context.connection, customer, start_us, end_us)


def _from_buckets(
    context: BillingContext,
    job: RatingJob,
    loaded: Loaded,
    timezone: str,
    read: PeriodRead | None = None,
) -> None:
    """Give ``job`` its rater and days from the buckets when they can tell them
    (``read``: its buckets already read)."""
    if read is not None:
        rater = _job_rater(context, job, loaded, read)
        days = read.days if timezone == read.timezone else local_days(read, timezone)
        if rater is not None and days is None:  # a day spans two local days: hours
            days = buckets.line_days(context, job, loaded, timezone, read.found())
    else:
        found = buckets.job_buckets(context, job, loaded)  # read once for both
        rater = buckets.job_rater(context, job, loaded, found)
        days = None if rater is None else buckets.line_days(context, job, loaded, timezone, found)
    if rater is not None and days is not None:
        job.rater, job.days = rater, days


def _finalized_from_buckets(
    context: BillingContext, pairs: list[tuple[StoredInvoice, RatingJob]]
) -> None:
    """Each finalized period's re-rating from the buckets of the revision it was rated
    under, when they hold exactly the events its invoice billed: no event of its period
    arrived after the invoice's cut (a late event would be in the buckets, not in the
    invoice). Under the revision in force, the periods of one billing period are read in
    one statement (``period_buckets``) and the late events of invoices sharing a cut in
    one more; under an older revision, ``closed_buckets`` (built or caught up once, never
    kept current). Otherwise the job is left to re-rate from raw events. Equal to
    ``_finalized_one`` of each (tests/integration/test_closed_batched.py)."""
    loaded = context.load()
    if loaded is None:
        return
    by_period: dict[tuple[int, int], list[tuple[StoredInvoice, RatingJob, Contract]]] = {}
    for stored, job in pairs:
        if stored.revision != loaded.revision:
            closed_buckets.read_closed_period(context, stored, job)
            continue
        contract = loaded.configuration.contract(stored.customer)
        if contract is not None:
            span = (stored.period_start_us, stored.period_end_us)
            by_period.setdefault(span, []).append((stored, job, contract))
    for members in by_period.values():
        chosen = [(contract, job.period, job.segments) for _, job, contract in members]
        found = period_buckets(context, loaded, chosen)
        if not found:
            continue
        late_customers = _arrived_late(context, loaded, [stored for stored, _, _ in members])
        for stored, job, contract in members:
            read = found.get(stored.customer)
            if read is not None and stored.invoice_id not in late_customers:
                _from_buckets(context, job, loaded, contract.timezone, read)


def _arrived_late(
    context: BillingContext, loaded: Loaded, invoices: list[StoredInvoice]
) -> set[str]:
    """The ``invoices`` (their ids) with an event of their period past their cut inside
    the buckets' watermark (read after the buckets were, so it covers at least what was
    read): one read of such events per distinct cut. An invoice whose cut the watermark
    does not include is named too (the buckets may lack its events)."""
    connection = context.connection
    mark = bucket_records.watermark(connection, loaded.revision)
    named: set[str] = set()
    by_cut: dict[Cut, list[StoredInvoice]] = {}
    for stored in invoices:
        cut = late.stored_invoice_cut(context, stored)
        through = None if mark is None else mark.through
        if through is None or through.partitions != cut.partitions or not through.includes(cut):
            named.add(stored.invoice_id)
        else:
            by_cut.setdefault(cut, []).append(stored)
    for cut, sharing in by_cut.items():
        assert mark is not None
        latest_end = max(stored.period_end_us for stored in sharing)
        arrived: dict[str, list[tuple[int, int]]] = {}
        for customer, timestamp_us, sequence in event_reads.late_candidates(
            connection, cut, mark.through, latest_end
        ):
            arrived.setdefault(customer, []).append((timestamp_us, sequence))
        for stored in sharing:
            partition = context.partition(stored.customer)
            if any(
                stored.period_start_us <= timestamp_us < stored.period_end_us
                and not cut.covers(partition, sequence)
                for timestamp_us, sequence in arrived.get(stored.customer, ())
            ):
                named.add(stored.invoice_id)
    return named


def _finalized_one(context: BillingContext, stored: StoredInvoice, job: RatingJob) -> None:
    """``_finalized_from_buckets`` of one invoice, read on its own (its buckets by its
    customer's key, its late events checked through the ledger's head): what the batched
    read must equal (the differential test's reference)."""
    loaded = context.load()
    if loaded is None:
        return
    if stored.revision != loaded.revision:
        closed_buckets.read_closed_period(context, stored, job)
        return
    cut = late.stored_invoice_cut(context, stored)
    partition = context.partition(stored.customer)
    arrived = event_reads.late_candidates(
        context.connection, cut, context.ledger_cut(), stored.period_end_us
    )
    if any(
        customer == stored.customer
        and stored.period_start_us <= timestamp_us < stored.period_end_us
        and not cut.covers(partition, sequence)
        for customer, timestamp_us, sequence in arrived
    ):
        return
    contract = loaded.configuration.contract(stored.customer)
    if contract is not None:
        _from_buckets(context, job, loaded, contract.timezone)
