"""The shadow evaluation's database work against real Postgres (as rai_app) and the real S3
server: the paired-outcome reader, the promotion and rejection transactions, and the workflow
running on the real activities in the time-skipping test server."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.promotion import PromotionActivities
from db.integrity import verify_chain
from domain.model_status import ModelStatus
from domain.promotion import (
    Approval,
    ChallengerEvidence,
    ConclusionStatus,
    EvaluationInput,
    EvaluationOutcome,
    shadow_evaluation_workflow_id,
)
from domain.sprt import sprt
from services.promotion import (
    decision_details,
    enter_canary,
    promote_challenger,
    read_challenger_evidence,
    read_paired_outcomes,
    reject_challenger,
)
from tests.integration.promotion_support import (
    Device,
    decisions,
    history,
    model_in,
    paired,
    statuses,
)
from tests.integration.services_env import ServicesEnv
from tests.polling import wait_until
from workflows.promotion import ShadowEvaluation

pytestmark = pytest.mark.integration

NO_SETTLE = timedelta(0)


async def champion_and_challenger(env: ServicesEnv) -> tuple[UUID, UUID, UUID]:
    tenant = await env.tenant()
    champion = await model_in(env, tenant, ModelStatus.PRODUCTION)
    challenger = await model_in(env, tenant, ModelStatus.SHADOW)
    return tenant, champion, challenger


async def test_the_reader_pairs_counts_and_moves_its_cursor(services_env: ServicesEnv) -> None:
    env = services_env
    tenant, champion, challenger = await champion_and_challenger(env)
    other_model = uuid4()
    device = Device(env, tenant)
    await device.send_each(
        paired(10.0, {challenger: 10.1, champion: 11.0}),  # win
        paired(10.0, {challenger: 12.0, champion: 10.5}),  # loss
        paired(10.0, {challenger: 9.5, champion: 10.5}),  # tie: a loss
        paired(10.0, {challenger: 10.0}),  # no champion prediction: not a pair
        paired(None, {challenger: 10.0, champion: 9.0}),  # no outcome: not a pair
        paired(10.0, {other_model: 10.0, champion: 9.0}),  # another model's prediction
        paired(-3.0, {challenger: -3.0, champion: -2.0}),  # win
    )

    first = await read_paired_outcomes(
        env.db, tenant, challenger, after=None, limit=100, settle=NO_SETTLE
    )
    assert first.challenger_status is ModelStatus.SHADOW
    assert (first.model_name, first.champion_id) == ("yield", champion)
    assert first.outcomes == [True, False, False, True]
    assert not first.more
    assert first.cursor is not None
    again = await read_paired_outcomes(
        env.db, tenant, challenger, after=first.cursor, limit=100, settle=NO_SETTLE
    )
    assert (again.outcomes, again.cursor) == ([], first.cursor)

    await device.send(
        paired(1.0, {challenger: 1.0, champion: 2.0}), paired(1.0, {challenger: 3.0, champion: 2.0})
    )
    newer = await read_paired_outcomes(
        env.db, tenant, challenger, after=first.cursor, limit=100, settle=NO_SETTLE
    )
    assert sorted(newer.outcomes) == [False, True]  # one batch: ordered by id within it
    assert newer.cursor is not None
    assert newer.cursor.received_at > first.cursor.received_at

    # A batch at a time, never an event twice or skipped.
    seen: list[bool] = []
    cursor = None
    for _ in range(10):  # 6 events, 2 a page
        page = await read_paired_outcomes(
            env.db, tenant, challenger, after=cursor, limit=2, settle=NO_SETTLE
        )
        seen += page.outcomes
        cursor = page.cursor
        if not page.more:
            break
    else:
        pytest.fail(f"10 pages of 2 and still more to read; seen {seen}, cursor {cursor}")
    assert seen[:4] == first.outcomes
    assert sorted(seen[4:]) == [False, True]

    settling = await read_paired_outcomes(
        env.db, tenant, challenger, after=None, limit=100, settle=timedelta(hours=1)
    )
    assert (settling.outcomes, settling.cursor) == ([], None)


async def test_the_evidence_reader_compares_the_challenger_with_the_mean_baseline(
    services_env: ServicesEnv,
) -> None:
    env = services_env
    tenant = await env.tenant()
    challenger = await model_in(env, tenant, ModelStatus.SHADOW)
    nothing = await read_challenger_evidence(env.db, tenant, challenger, settle=NO_SETTLE)
    assert nothing == ChallengerEvidence(outcomes=0)
    await Device(env, tenant).send_each(
        paired(1.0, {challenger: 1.0}),
        paired(2.0, {challenger: 2.0}),
        paired(3.0, {challenger: 3.0}),
        paired(4.0, {challenger: 5.0}),
        paired(None, {challenger: 9.0}),  # no outcome: not evidence
        paired(7.0, {uuid4(): 7.0}),  # another model's prediction
    )
    found = await read_challenger_evidence(env.db, tenant, challenger, settle=NO_SETTLE)
    # challenger: |0|+|0|+|0|+|1| / 4; baseline: mean 2.5, |1.5|+|0.5|+|0.5|+|1.5| / 4
    assert found == ChallengerEvidence(outcomes=4, challenger_mae=0.25, baseline_mae=1.0)
    settling = await read_challenger_evidence(env.db, tenant, challenger, settle=timedelta(hours=1))
    assert settling.outcomes == 0


async def test_the_reader_reports_missing_champions_and_challengers(
    services_env: ServicesEnv,
) -> None:
    env = services_env
    tenant = await env.tenant()
    lonely = await model_in(env, tenant, ModelStatus.SHADOW)
    alone = await read_paired_outcomes(
        env.db, tenant, lonely, after=None, limit=10, settle=NO_SETTLE
    )
    assert (alone.challenger_status, alone.champion_id, alone.outcomes) == (
        ModelStatus.SHADOW,
        None,
        [],
    )
    unknown = await read_paired_outcomes(
        env.db, tenant, uuid4(), after=None, limit=10, settle=NO_SETTLE
    )
    assert unknown.challenger_status is None
    intruder = await env.tenant("intruder")
    hidden = await read_paired_outcomes(
        env.db, intruder, lonely, after=None, limit=10, settle=NO_SETTLE
    )
    assert hidden.challenger_status is None  # row-level security: not the intruder's model


async def test_canary_then_promotion_archives_the_champion_in_the_same_transaction(
    services_env: ServicesEnv,
) -> None:
    env = services_env
    tenant, champion, challenger = await champion_and_challenger(env)
    evidence = sprt([True] * 30)
    details = decision_details(evidence, champion, f"shadow/{challenger}")
    too_early = await promote_challenger(
        env.db, tenant, challenger, expected_champion_id=champion, reason="x", details=details
    )
    assert too_early.status is ConclusionStatus.CHALLENGER_MOVED  # SHADOW is not CANARY
    canary = await enter_canary(
        env.db,
        tenant,
        challenger,
        expected_champion_id=champion,
        reason="SPRT ACCEPT",
        details=details,
    )
    assert canary.status is ConclusionStatus.DONE
    found = await statuses(env, tenant)
    assert (found[champion], found[challenger]) == ("PRODUCTION", "CANARY")
    again = await enter_canary(
        env.db, tenant, challenger, expected_champion_id=champion, reason="retry", details={}
    )
    assert (again.status, again.detail) == (ConclusionStatus.DONE, "already in CANARY")

    done = await promote_challenger(
        env.db,
        tenant,
        challenger,
        expected_champion_id=champion,
        reason="canary held",
        details=details,
    )
    assert (done.status, done.archived_id) == (ConclusionStatus.DONE, champion)
    found = await statuses(env, tenant)
    assert (found[champion], found[challenger]) == ("ARCHIVED", "PRODUCTION")
    assert list(found.values()).count("PRODUCTION") == 1  # the one-PRODUCTION law holds

    moves = await history(env, tenant, challenger)
    assert [(m["from_status"], m["to_status"], m["reason"]) for m in moves[-2:]] == [
        ("SHADOW", "CANARY", "SPRT ACCEPT"),
        ("CANARY", "PRODUCTION", "canary held"),
    ]
    [archived] = (await history(env, tenant, champion))[-1:]
    assert (archived["to_status"], archived["reason"]) == ("ARCHIVED", f"replaced by {challenger}")
    # now() is the transaction's start: archive and promotion share one timestamp.
    assert moves[-1]["changed_at"] == archived["changed_at"]
    assert moves[-2]["changed_at"] < archived["changed_at"]  # CANARY came first, apart

    entered, decision = await decisions(env, tenant)
    assert (entered["subject_id"], entered["outcome"]) == (str(challenger), "CANARY")
    assert (decision["subject_id"], decision["outcome"]) == (str(challenger), "ACCEPTED")
    assert decision["details"]["wins"] == decision["details"]["observations"] == 30
    assert decision["details"]["champion_id"] == str(champion)
    assert decision["details"]["archived"] == str(champion)
    assert (await verify_chain(env.db, tenant)).ok

    again = await promote_challenger(
        env.db, tenant, challenger, expected_champion_id=champion, reason="retry", details=details
    )
    assert (again.status, again.detail) == (ConclusionStatus.DONE, "already in PRODUCTION")
    assert len(await decisions(env, tenant)) == 2


async def test_a_changed_champion_stops_the_promotion(services_env: ServicesEnv) -> None:
    env = services_env
    tenant, champion, challenger = await champion_and_challenger(env)
    before = await statuses(env, tenant)
    changed = await enter_canary(
        env.db,
        tenant,
        challenger,
        expected_champion_id=uuid4(),
        reason="SPRT ACCEPT",
        details={},
    )
    assert (changed.status, changed.champion_id) == (ConclusionStatus.CHAMPION_CHANGED, champion)
    assert await statuses(env, tenant) == before
    await enter_canary(
        env.db, tenant, challenger, expected_champion_id=champion, reason="ok", details={}
    )
    in_canary = await statuses(env, tenant)
    changed = await promote_challenger(
        env.db,
        tenant,
        challenger,
        expected_champion_id=uuid4(),
        reason="canary held",
        details={},
    )
    assert (changed.status, changed.champion_id) == (ConclusionStatus.CHAMPION_CHANGED, champion)
    assert await statuses(env, tenant) == in_canary
    assert [d["outcome"] for d in await decisions(env, tenant)] == ["CANARY"]


async def test_rejection_is_final_and_recorded(services_env: ServicesEnv) -> None:
    env = services_env
    tenant, champion, challenger = await champion_and_challenger(env)
    evidence = sprt([False] * 15)
    details = decision_details(evidence, champion, f"shadow/{challenger}")
    done = await reject_challenger(
        env.db,
        tenant,
        challenger,
        expected_champion_id=champion,
        reason="SPRT REJECT",
        details=details,
    )
    assert done.status is ConclusionStatus.DONE
    found = await statuses(env, tenant)
    assert (found[champion], found[challenger]) == ("PRODUCTION", "REJECTED")
    [decision] = await decisions(env, tenant)
    assert decision["outcome"] == "REJECTED"
    again = await reject_challenger(
        env.db, tenant, challenger, expected_champion_id=champion, reason="retry", details=details
    )
    assert (again.status, again.detail) == (ConclusionStatus.DONE, "already REJECTED")
    late = await promote_challenger(
        env.db, tenant, challenger, expected_champion_id=champion, reason="late", details=details
    )
    assert late.status is ConclusionStatus.CHALLENGER_MOVED


async def test_a_canary_can_be_rejected(services_env: ServicesEnv) -> None:
    env = services_env
    tenant, champion, challenger = await champion_and_challenger(env)
    await enter_canary(
        env.db, tenant, challenger, expected_champion_id=champion, reason="ok", details={}
    )
    done = await reject_challenger(
        env.db,
        tenant,
        challenger,
        expected_champion_id=champion,
        reason="in CANARY: SPRT REJECT",
        details={},
    )
    assert done.status is ConclusionStatus.DONE
    found = await statuses(env, tenant)
    assert (found[champion], found[challenger]) == ("PRODUCTION", "REJECTED")


async def test_without_a_champion_an_approval_is_recorded_with_who_and_why(
    services_env: ServicesEnv,
) -> None:
    env = services_env
    tenant = await env.tenant()
    challenger = await model_in(env, tenant, ModelStatus.SHADOW)
    approval = Approval(approver="alice", reason="validated offline on the 2026 trials")
    reason = "approved by alice: validated offline on the 2026 trials"
    details = decision_details(sprt([]), None, f"shadow/{challenger}", approval=approval)
    entered = await enter_canary(
        env.db, tenant, challenger, expected_champion_id=None, reason=reason, details=details
    )
    assert entered.status is ConclusionStatus.DONE
    done = await promote_challenger(
        env.db,
        tenant,
        challenger,
        expected_champion_id=None,
        reason="canary held",
        details=details,
    )
    assert (done.status, done.archived_id) == (ConclusionStatus.DONE, None)
    assert (await statuses(env, tenant))[challenger] == "PRODUCTION"
    moves = await history(env, tenant, challenger)
    assert [(m["to_status"], m["reason"]) for m in moves[-2:]] == [
        ("CANARY", reason),
        ("PRODUCTION", "canary held"),
    ]
    entered_row, _ = await decisions(env, tenant)
    assert entered_row["details"]["approved_by"] == "alice"
    assert entered_row["details"]["approval_reason"] == "validated offline on the 2026 trials"
    assert entered_row["details"]["reason"] == reason


async def test_two_accepted_challengers_conclude_one_after_the_other(
    services_env: ServicesEnv,
) -> None:
    env = services_env
    tenant, champion, first = await champion_and_challenger(env)
    second = await model_in(env, tenant, ModelStatus.SHADOW)
    for challenger in (first, second):
        await enter_canary(
            env.db, tenant, challenger, expected_champion_id=champion, reason="ok", details={}
        )
    conclusions = await asyncio.gather(
        *(
            promote_challenger(
                env.db,
                tenant,
                challenger,
                expected_champion_id=champion,
                reason="canary held",
                details={},
            )
            for challenger in (first, second)
        )
    )
    assert sorted(c.status.value for c in conclusions) == ["CHAMPION_CHANGED", "DONE"]
    found = await statuses(env, tenant)
    assert list(found.values()).count("PRODUCTION") == 1
    assert found[champion] == "ARCHIVED"


async def test_the_workflow_on_the_real_activities_continues_then_accepts(
    services_env: ServicesEnv, time_skipping: WorkflowEnvironment
) -> None:
    env = services_env
    tenant, champion, challenger = await champion_and_challenger(env)
    device = Device(env, tenant)
    win = paired(5.0, {challenger: 5.0, champion: 6.0})
    await device.send(*[win] * 10)
    queue = f"promotion-{uuid.uuid4()}"
    async with Worker(
        time_skipping.client,
        task_queue=queue,
        workflows=[ShadowEvaluation],
        activities=PromotionActivities(db=env.db).activities(),
    ):
        handle = await time_skipping.client.start_workflow(
            ShadowEvaluation.run,
            EvaluationInput(
                tenant_id=tenant,
                model_version_id=challenger,
                settle=NO_SETTLE,
                canary_dwell=timedelta(hours=3),
            ),
            id=shadow_evaluation_workflow_id(challenger),
            task_queue=queue,
        )
        # Time is skipped only while the result is awaited: the first check happens, then
        # the workflow waits on its timer for more events.
        progress = await wait_until(
            lambda: handle.query(ShadowEvaluation.progress),
            lambda progress: progress.checks > 0,
            within=30,
            failure="the shadow evaluation made no check",
        )
        assert (progress.decision.value, progress.observations) == ("CONTINUE", 10)
        await device.send(*[win] * 25)
        result = await handle.result()
    assert result.outcome is EvaluationOutcome.ACCEPTED
    assert (result.sprt.wins, result.sprt.observations) == (30, 30)
    assert result.archived_id == champion
    found = await statuses(env, tenant)
    assert (found[champion], found[challenger]) == ("ARCHIVED", "PRODUCTION")
    entered, decision = await decisions(env, tenant)
    assert (entered["outcome"], decision["outcome"]) == ("CANARY", "ACCEPTED")
    assert entered["details"]["workflow_id"] == decision["details"]["workflow_id"]
    assert decision["details"]["workflow_id"] == f"shadow/{challenger}"
    assert result.canary_sprt is not None
    assert result.canary_sprt.observations == 0  # no pairs arrived during the canary
    moves = await history(env, tenant, challenger)
    canary_at, production_at = moves[-2]["changed_at"], moves[-1]["changed_at"]
    assert moves[-2]["to_status"] == "CANARY"
    assert production_at > canary_at  # a real stage: its own transaction, later
