"""Workflows with planted non-determinism: each line marked `# expect: DFxxx` must be found.

Not imported by the tests (it is read as text by `df lint`); it only has to parse.
"""
# ruff: noqa
# mypy: ignore-errors

import asyncio
import datetime as dt
import os
import random
import threading
import time
import uuid
from datetime import datetime
from random import randint as pick
from time import monotonic

import durablefuture as df
from durablefuture import activity, sleep

COUNTER = 0


def charge(order_id: str) -> str:  # an activity: not checked
    return str(time.time()) + os.environ["HOME"]


def clock_flow(order_id: str):
    started = time.time()  # expect: DF101
    when = datetime.now()  # expect: DF101
    today = dt.date.today()  # expect: DF101
    tick = monotonic()  # expect: DF101
    fine = df.workflow.now()
    yield df.activity(charge, order_id)
    return started, when, today, tick, fine


def random_flow(order_id: str):
    a = random.random()  # expect: DF102
    b = pick(1, 6)  # expect: DF102
    c = uuid.uuid4()  # expect: DF103
    d = os.urandom(8)  # expect: DF102
    ok = df.workflow.random(), df.workflow.uuid4()
    yield df.sleep(1)
    return a, b, c, d, ok


def env_and_io_flow(path: str):
    home = os.environ.get("HOME")  # expect: DF104
    user = os.getenv("USER")  # expect: DF104
    with open(path) as f:  # expect: DF105
        data = f.read()
    yield df.activity(charge, data)
    return home, user


def concurrency_flow():
    t = threading.Thread(target=print)  # expect: DF106
    loop = asyncio.get_event_loop()  # expect: DF106
    time.sleep(1)  # expect: DF112
    yield df.sleep(1)
    return t, loop


async def async_flow():  # expect: DF107
    await asyncio.sleep(0)  # expect: DF106 DF107
    yield df.sleep(1)


def forgotten_yield_flow(order_id: str):
    df.activity(charge, order_id)  # expect: DF108
    sleep(5)  # expect: DF108
    result = yield activity(charge, order_id)
    return df.activity(charge, result)  # expect: DF108


def set_and_global_flow(items: list[str]):
    global COUNTER  # expect: DF110
    COUNTER += 1
    for item in set(items):  # expect: DF109
        yield df.activity(charge, item)
    names = [x for x in {"a", "b"}]  # expect: DF109
    bucket = hash(items[0]) % 4  # expect: DF113
    return names, bucket


def import_inside_flow():
    import random as r  # expect: DF111
    from time import time as now  # expect: DF111

    yield df.sleep(1)
    return r, now


def silenced_flow():
    started = time.time()  # df: noqa DF101
    other = time.time()  # df: noqa
    yield df.side_effect(lambda: time.time())  # a lambda is the sanctioned way
    return started, other
