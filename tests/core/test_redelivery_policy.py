"""One redelivery policy for every daemon: the server's inputs, the schedule inputs and the
worker's tasks back off the same way and are dead-lettered before ``max_deliver`` strands them."""

from __future__ import annotations

from durablefuture.server.options import ServerOptions
from durablefuture.server.schedules import ScheduleOptions
from durablefuture.transport.redelivery import Redelivery
from durablefuture.worker.deliveries import MAX_TASK_DELIVERIES


def test_server_inputs_are_given_up_on_one_delivery_before_max_deliver() -> None:
    options = ServerOptions(input_max_deliver=10)
    policy = options.redelivery
    assert isinstance(policy, Redelivery)
    assert not policy.exhausted(8) and policy.exhausted(9)
    assert [policy.delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert policy.delay(50) == 30.0


def test_schedule_inputs_back_off_to_ten_seconds_and_are_given_up_before_max_deliver() -> None:
    policy = ScheduleOptions(max_deliver=20).redelivery
    assert [policy.delay(n) for n in (1, 2, 3)] == [0.4, 0.8, 1.6]
    assert policy.delay(50) == 10.0
    assert not policy.exhausted(18) and policy.exhausted(19)


def test_a_max_deliver_of_one_still_gives_a_valid_policy() -> None:
    assert ServerOptions(input_max_deliver=1).redelivery.give_up_at == 1
    assert ScheduleOptions(max_deliver=1).redelivery.give_up_at == 1


def test_the_worker_uses_the_same_policy() -> None:
    worker = Redelivery(give_up_at=MAX_TASK_DELIVERIES)
    assert worker.delay(3) == ServerOptions().redelivery.delay(3)


def test_a_message_delivered_past_the_limit_is_abandoned_before_it_is_handled_again() -> None:
    # delivered more often than given up at: the deliveries before ended without a failure
    # (their handler died), so the next one gives it up without handling it
    policy = ServerOptions(input_max_deliver=10).redelivery
    assert not policy.abandoned(9) and policy.abandoned(10)
    assert Redelivery(give_up_at=18).abandoned(19)


def test_the_worker_gives_up_two_deliveries_before_its_consumers_max_deliver() -> None:
    from durablefuture.worker.deliveries import give_up_limit

    assert give_up_limit(20) == MAX_TASK_DELIVERIES == 18
    assert give_up_limit(4) == 2  # given up on delivery 3 at the latest, delivery 4 spare
    assert give_up_limit(100) == MAX_TASK_DELIVERIES
    assert give_up_limit(-1) == give_up_limit(0) == MAX_TASK_DELIVERIES  # unlimited
    assert give_up_limit(2) == 1
