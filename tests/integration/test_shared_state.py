"""Gateways behind one address act as one service (issue 14, item 4): the dashboard's login throttle and
relay in's memory of what it decided and told the national axis live in the status store, and two
gateways (two :class:`StatusStore` on one database) share them, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
import pytest_asyncio
from aio_pika.abc import AbstractChannel

from adapters.dashboard.throttle import LoginThrottle, ThrottlePolicy
from adapters.national_axis import CircuitBreaker, NationalAxisClient, RelayIn
from adapters.national_axis.client import ReceivedItem
from adapters.rabbitmq import BrokerNames, Publisher
from adapters.store import StatusStore
from bus.errors import AxisUnavailableError, InputError
from bus.intake import Intake
from tests.integration.conftest import fresh_database
from tests.integration.dashboard_client import dashboard_env, login

pytestmark = pytest.mark.asyncio

ADDRESS = "198.51.100.7"
ATTACKER = "198.51.100.66"
OFFICE = "203.0.113.10"


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest_asyncio.fixture
async def gateways(database: str) -> AsyncIterator[tuple[StatusStore, ...]]:
    """Two gateways' stores: two engines (two pools) on one database."""
    first, second = StatusStore.connect(database), StatusStore.connect(database)
    await first.create_schema()
    await second.create_schema()
    yield first, second
    await first.close()
    await second.close()


class FakeTime:
    """The throttles' wall clock (seconds since the epoch, shared by the gateways) and sleep: a slowed
    try's wait is written down, not waited."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def _throttles(stores: tuple[StatusStore, ...], clock: FakeTime) -> list[LoginThrottle]:
    return [LoginThrottle(clock=clock, sleep=clock.sleep, store=store) for store in stores]


# -- the login throttle ------------------------------------------------------------------------------------


async def test_in_the_store_an_address_that_keeps_failing_waits_2_4_8_up_to_300_s(
    gateways: tuple[StatusStore, ...],
) -> None:
    """The unit tests' rules, kept in the store: tries alternate between the two gateways."""
    clock = FakeTime()
    one, two = _throttles(gateways, clock)
    for n in range(4):
        assert await (one, two)[n % 2].admit(f"name-{n}", ADDRESS) == 0
    waits = []
    for n in range(10):
        here, there = (one, two) if n % 2 else (two, one)
        wait = await here.admit("an", ADDRESS)
        assert wait > 0
        assert await there.admit("an", ADDRESS) == wait  # refused tries count for nothing, anywhere
        clock.now += wait - 1
        assert await there.client_wait_s(ADDRESS) == 1
        clock.now += 1
        waits.append(wait)
        assert await there.admit("an", ADDRESS) == 0  # admitted, and failed again
    assert waits == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert await one.client_wait_s("198.51.100.8") == 0


async def test_failures_counted_by_one_gateway_are_seen_by_the_other(
    gateways: tuple[StatusStore, ...],
) -> None:
    clock = FakeTime()
    one, two = _throttles(gateways, clock)
    for _ in range(2):
        assert await one.admit("an", ADDRESS) == 0
        assert await two.admit("an", ADDRESS) == 0
    assert await two.admit("an", ADDRESS) == 2  # the fifth try, wherever it lands
    assert await one.admit("binh", ADDRESS) == 2
    assert await one.client_wait_s(ADDRESS) == await two.client_wait_s(ADDRESS) == 2
    assert await one.name_delay_s("an") == await two.name_delay_s("an") == 1.0
    assert await one.counted() == await two.counted() == (1, 1)
    assert await gateways[1].read_login_failures(
        "client", "198.51.100.7", forget_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    ) == (4, dt.datetime.fromtimestamp(clock.now, dt.UTC))


async def test_a_burst_over_two_gateways_counts_each_try_once(gateways: tuple[StatusStore, ...]) -> None:
    """Concurrent tries from one address, spread over both gateways before any answer: four are
    admitted, the others refused; tries on one name from many addresses are each counted once, and
    slowed as if they came one after another."""
    clock = FakeTime()
    one, two = _throttles(gateways, clock)
    answers = await asyncio.gather(*((one, two)[n % 2].admit("an", ADDRESS) for n in range(24)))
    assert sorted(answers) == [0] * 4 + [2] * 20
    assert clock.slept == []
    assert await one.name_delay_s("an") == 1.0  # only the four admitted tries count for the name

    answers = await asyncio.gather(*((one, two)[n % 2].admit("binh", f"10.0.0.{n}") for n in range(30)))
    assert answers == [0] * 30
    counted = await gateways[0].read_login_failures(
        "name", one._name_key("binh"), forget_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    )
    assert counted is not None
    assert counted[0] == 30
    assert sorted(clock.slept) == [1.0, 2.0, 4.0] + [5.0] * 23  # the delays of failures 4 … 29
    assert await two.counted() == (31, 2)


async def test_a_right_password_takes_back_its_own_try_even_unawaited(
    gateways: tuple[StatusStore, ...],
) -> None:
    """The dashboard calls ``succeeded`` without awaiting it: the take-back is written all the same, and
    nothing else is taken back."""
    clock = FakeTime()
    one, two = _throttles(gateways, clock)
    for _ in range(3):
        await one.admit("an", ADDRESS)
    await one.admit("an", ADDRESS)
    one.succeeded("an", ADDRESS)  # as adapters/dashboard/app.py calls it
    assert await one.client_wait_s(ADDRESS) == 0  # waits for its own take-back first
    assert await two.client_wait_s(ADDRESS) == 0
    await two.admit("binh", ADDRESS)  # a fourth failure, on another gateway and another name
    assert await one.client_wait_s(ADDRESS) == 2
    await one.admit("an", "203.0.113.10")
    await one.succeeded("an", "203.0.113.10")  # awaited
    assert await two.counted() == (1, 2)  # "an": three failures from ADDRESS stay


async def test_counters_are_forgotten_after_a_quiet_hour_and_their_rows_deleted(
    gateways: tuple[StatusStore, ...],
) -> None:
    clock = FakeTime()
    one, two = _throttles(gateways, clock)
    for n in range(8):
        await (one, two)[n % 2].admit("an", f"198.51.100.{n % 2}")
    assert await one.client_wait_s("198.51.100.0") > 0
    assert await two.name_delay_s("an") > 0
    clock.now += 3599
    assert await two.client_wait_s("198.51.100.0") == 0  # its waits are over, its failures still count
    assert await one.name_delay_s("an") > 0
    clock.now += 2
    assert await one.client_wait_s("198.51.100.0") == 0
    assert await two.name_delay_s("an") == 0.0
    assert await one.counted() == (0, 0)
    # A forgotten counter starts again from one, on either gateway.
    assert await two.admit("an", "198.51.100.0") == 0
    assert await one.counted() == (1, 1)
    # Its rows are deleted now and then (every minute, by whichever gateway admits a try).
    clock.now += 3601
    await two.admit("binh", "198.51.100.9")
    later = dt.datetime.fromtimestamp(clock.now + 1, dt.UTC)
    assert await gateways[0].forget_login_failures(later) == 2  # binh's two rows: the others are gone


async def test_the_store_follows_a_changed_policy(gateways: tuple[StatusStore, ...]) -> None:
    """One free failure and no cap reached before the exponent's bound (2**32 s): the store's single
    statement says what the throttle's formula says."""
    clock = FakeTime()
    policy = ThrottlePolicy(free_failures=1, first_wait_s=1.0, max_wait_s=10.0**12, forget_s=10.0**12)
    shared = LoginThrottle(policy, clock=clock, sleep=clock.sleep, store=gateways[0])
    here = LoginThrottle(policy, clock=clock, sleep=clock.sleep)
    for _ in range(40):
        assert await shared.admit("an", ADDRESS) == await here.admit("an", ADDRESS) == 0
        wait = await shared.client_wait_s(ADDRESS)
        assert wait == here.refused_for(ADDRESS)
        assert await shared.admit("an", ADDRESS) == wait  # refused
        clock.now += wait
    assert wait == 2**32  # the bound of the exponent, as in memory


async def test_the_dashboard_throttles_with_what_another_gateway_counted(
    database: str, gateways: tuple[StatusStore, ...]
) -> None:
    """The dashboard as ``bus serve`` serves it, its throttle on the store: failures another gateway
    counted make this one answer 429, and a right password there is taken back for every gateway."""
    clock = FakeTime()
    here, there = _throttles(gateways, clock)
    async with (
        dashboard_env(database, throttle=here) as env,
        env.client_at(ATTACKER) as attacker,
        env.client_at(OFFICE) as office,
    ):
        for n in range(2):
            assert (await login(env, "sai", f"đoán-{n}", client=attacker)).status_code == 401
            assert await there.admit(f"đoán-{n}", ATTACKER) == 0  # failed on the other gateway
        refused = await login(env, "sai", "đoán-9", client=attacker)
        assert (refused.status_code, refused.headers["retry-after"]) == (429, "2")
        assert await there.client_wait_s(ATTACKER) == 2
        assert (await login(env, client=office)).status_code == 303
        # The dashboard does not await the take-back (a write under way as it answers): written by the
        # time its throttle's next call comes, for everyone.
        assert await here.counted() == await there.counted() == (1, 2)


# -- relay in ------------------------------------------------------------------------------------------------


class FakeAxis:
    """The national axis: lists *listed*, tells ``done``/``fail`` apart, and can be down for updates."""

    def __init__(self, listed: list[str]) -> None:
        self.listed = listed
        self.fetched: list[str] = []
        self.told: list[tuple[str, str]] = []
        self.updates_fail = False

    async def received(self, *, message_type: str = "edoc") -> list[ReceivedItem]:
        if message_type != "edoc":
            return []
        return [ReceivedItem(d, "edoc", "eDoc", "", "", "", "", "") for d in self.listed]

    async def get_edoc(self, doc_id: str) -> bytes:
        self.fetched.append(doc_id)
        return doc_id.encode()

    async def update_status(self, doc_id: str, status: str) -> None:
        if self.updates_fail:
            raise AxisUnavailableError("the axis is down")
        self.told.append((doc_id, status))


class FakeIntake:
    async def accept_from_axis(self, body: bytes) -> SimpleNamespace:
        if body.startswith(b"bad"):
            raise InputError("refused")
        return SimpleNamespace(bus_id="b", document_id="d", kind="document", sender="s", destinations=[])


class FakePublisher:
    def __init__(self) -> None:
        self.dead: list[str] = []

    async def dead_letter(self, body: bytes, *, message_id: str, **_: object) -> None:
        self.dead.append(message_id)


def _relay_in(axis: FakeAxis, store: StatusStore, publisher: FakePublisher) -> RelayIn:
    return RelayIn(
        cast(NationalAxisClient, axis),
        cast(Intake, FakeIntake()),
        cast(Publisher, publisher),
        CircuitBreaker(),
        store=store,
        channel=cast(AbstractChannel, None),
        names=BrokerNames("test"),
    )


async def test_the_gateway_that_takes_over_polling_knows_what_was_decided_and_told(
    gateways: tuple[StatusStore, ...],
) -> None:
    axis, publisher = FakeAxis(["good-1", "bad-2"]), FakePublisher()
    first = _relay_in(axis, gateways[0], publisher)
    assert await first.poll_once() == 2
    assert axis.told == [("good-1", "done"), ("bad-2", "fail")]
    assert publisher.dead == ["axis|bad-2"]  # not in the store: the fake broker keeps it
    axis.listed.append("good-3")
    axis.updates_fail = True
    with pytest.raises(AxisUnavailableError):
        await first.poll_once()  # good-3 is taken, but the axis does not hear "done"
    # The first gateway dies; the second takes over polling, the axis still listing all three.
    axis.updates_fail = False
    axis.fetched.clear()
    axis.told.clear()
    second = _relay_in(axis, gateways[1], publisher)
    assert await second.poll_once() == 0
    assert axis.fetched == []  # nothing taken again
    assert axis.told == [("good-3", "done")]  # told what it was owed, and only that
    assert await gateways[0].axis_inbound("good-3") == ("done", "done")
    assert await gateways[0].axis_inbound("bad-2") == ("fail", "fail")
    assert await gateways[0].axis_inbound("unknown") == (None, None)
    assert (first.accepted, first.refused, second.accepted) == (2, 1, 0)


async def test_a_replay_decided_on_one_gateway_is_told_by_the_poller(
    gateways: tuple[StatusStore, ...],
) -> None:
    """An operator's replay accepted by another gateway: the poller says "done", not the refusal."""
    axis, publisher = FakeAxis(["bad-1"]), FakePublisher()
    poller = _relay_in(axis, gateways[0], publisher)
    await poller.poll_once()
    assert axis.told == [("bad-1", "fail")]
    at = dt.datetime.now(dt.UTC)
    await gateways[1].decide_axis_inbound("bad-1", "done", at)  # what _replayed writes
    assert await gateways[0].axis_inbound("bad-1") == ("done", "fail")
    await poller.poll_once()
    await poller.poll_once()
    assert axis.told == [("bad-1", "fail"), ("bad-1", "done")]
    assert axis.fetched == ["bad-1"]


async def test_relay_in_rows_untouched_for_days_are_forgotten(gateways: tuple[StatusStore, ...]) -> None:
    one, two = gateways
    now = dt.datetime.now(dt.UTC)
    await one.decide_axis_inbound("old", "done", now - dt.timedelta(days=8))
    await two.told_axis_inbound("old", "done", now - dt.timedelta(days=8))
    await one.told_axis_inbound("new", "fail", now)  # told, nothing decided here (a dead letter's)
    assert await two.axis_inbound("new") == (None, "fail")
    assert await two.forget_axis_inbound(now - dt.timedelta(days=7)) == 1
    assert await one.axis_inbound("old") == (None, None)
    assert await one.axis_inbound("new") == (None, "fail")
    # The gateway that polls deletes them itself, once an hour.
    await one.decide_axis_inbound("older", "fail", now - dt.timedelta(days=30))
    await _relay_in(FakeAxis([]), two, FakePublisher()).poll_once()
    assert await one.axis_inbound("older") == (None, None)
