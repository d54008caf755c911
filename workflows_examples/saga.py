"""Saga: book a trip (flight, hotel, car); if a step fails, undo the booked ones in reverse."""

from __future__ import annotations

from datetime import timedelta

import durablefuture as df

NO_RETRY = df.ActivityOptions(
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=df.RetryPolicy(maximum_attempts=1),
)
RETRY = df.ActivityOptions(
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=df.RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5),
)


def book_flight(trip_id: str) -> str:
    return f"flight-{trip_id}"


def book_hotel(trip_id: str) -> str:
    return f"hotel-{trip_id}"


def book_car(trip_id: str, fail: bool) -> str:
    if fail:
        raise df.ApplicationError("no cars left at the destination", type="SoldOut")
    return f"car-{trip_id}"


def cancel_flight(booking: str) -> str:
    return f"cancelled {booking}"


def cancel_hotel(booking: str) -> str:
    return f"cancelled {booking}"


def cancel_car(booking: str) -> str:
    return f"cancelled {booking}"


def trip_workflow(trip_id: str, fail_car: bool = False):  # type: ignore[no-untyped-def]
    undo: list[tuple[object, str]] = []
    try:
        flight = yield df.activity(book_flight, trip_id, options=NO_RETRY)
        undo.append((cancel_flight, flight))
        hotel = yield df.activity(book_hotel, trip_id, options=NO_RETRY)
        undo.append((cancel_hotel, hotel))
        car = yield df.activity(book_car, trip_id, fail_car, options=NO_RETRY)
        undo.append((cancel_car, car))
    except df.ActivityError as err:
        undone = []
        for cancel, booking in reversed(undo):  # compensate in reverse order
            undone.append((yield df.activity(cancel, booking, options=RETRY)))  # type: ignore[arg-type]
        return {"status": "compensated", "reason": str(err.cause), "undone": undone}
    return {"status": "booked", "bookings": [flight, hotel, car]}
