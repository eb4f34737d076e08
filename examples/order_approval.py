"""An order workflow run by the official SDK against a running dw-server.

It charges a card (activity), waits for a manager's approval (signal), lets a cooling-off
period pass (durable timer) and then ships (activity).

    python examples/order_approval.py --url http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from durable_workflow import ActivityRetryPolicy, Client, Worker, activity, workflow


@activity.defn(name="charge_card")
def charge_card(order_id: str, amount: int) -> str:
    return f"charged {amount} for {order_id}"


@activity.defn(name="ship")
def ship(order_id: str) -> str:
    return f"shipped {order_id}"


@workflow.defn(name="order_approval")
class OrderApproval:
    def __init__(self) -> None:
        self.approver: str | None = None

    @workflow.signal("approve")
    def approve(self, who: str) -> None:
        self.approver = who

    def run(self, ctx, order_id, amount):
        retry = ActivityRetryPolicy(max_attempts=3, initial_interval_seconds=1)
        receipt = yield ctx.schedule_activity("charge_card", [order_id, amount], retry_policy=retry, start_to_close_timeout=30)
        approved = yield ctx.wait_condition(lambda: self.approver is not None, key="approval", timeout=3600)
        if not approved:
            raise RuntimeError(f"order {order_id} was not approved in time")
        yield ctx.sleep(2)  # cooling-off period: a durable timer, it survives a server restart
        shipment = yield ctx.schedule_activity("ship", [order_id])
        return {"receipt": receipt, "approved_by": self.approver, "shipment": shipment}


async def main(url: str) -> None:
    async with Client(url, namespace="default") as client:
        worker = Worker(client, task_queue="orders", workflows=[OrderApproval], activities=[charge_card, ship], poll_timeout=5)
        running = asyncio.create_task(worker.run())
        try:
            workflow_id = f"order-{uuid.uuid4().hex[:8]}"
            handle = await client.start_workflow(
                workflow_type="order_approval", workflow_id=workflow_id, task_queue="orders", input=[workflow_id, 4200]
            )
            print(f"started {workflow_id}; sending the approval signal")
            await asyncio.sleep(1)
            await handle.signal("approve", ["ada@example.com"])
            result = await client.get_workflow_handle(workflow_id).result(timeout=60)
            print("result:", result)
        finally:
            await worker.stop()
            await running


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    asyncio.run(main(parser.parse_args().url))
