"""Coordinator: a parent starts its children, then tells each one when to go (a signal).

``df.start`` returns a child's handle at once; ``child.signal(...)`` sends it a signal through
the parent's history (delivered exactly once, whatever crashes); ``df.all_of`` waits for all.
"""

from __future__ import annotations

import durablefuture as df


def part_workflow(part: int):  # type: ignore[no-untyped-def]
    word = yield df.wait_signal("go")
    return f"part {part}: {word}"


def coordinator_workflow(parts: int):  # type: ignore[no-untyped-def]
    wid = df.workflow.info().workflow_id
    children = []
    for part in range(1, parts + 1):
        children.append(
            (yield df.start(df.child_workflow(part_workflow, part, id=f"{wid}-{part}")))
        )
    for child in children:
        yield child.signal("go", "done")
    return (yield df.all_of(*children))
