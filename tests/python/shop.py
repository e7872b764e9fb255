"""A shop in Python on the learning loop, written from the README's contract
only: rank with BANDIT.RANK (redis-py), log the decision to the `decisions`
topic and the user's rewards to the `rewards` topic (confluent-kafka), both
keyed by event id. tests/tests/python_shop.rs runs it against real servers
and checks that the model learned exactly the join of what it sent.

    shop.py --redis-port P --brokers HOST:PORT --model KEY --events N --seed S

Prints one JSON line: what it sent.
"""

import argparse
import json
import random
import sys
import time

import redis
from confluent_kafka import Producer


def now_ms():
    return int(time.time() * 1000)


def rank(client, model, context, products, top, epsilon, event_id):
    """BANDIT.RANK … POLICY EGREEDY ε EVENTID id WITHPROBS: the model's
    version and [(product id, probability)] top first (RESP2: flat pairs,
    each item [id, probability])."""
    reply = client.execute_command(
        "BANDIT.RANK", model, "CONTEXT", *context, "ARMS", len(products), *products,
        "TOP", top, "POLICY", "EGREEDY", epsilon, "EVENTID", event_id, "WITHPROBS",
    )
    fields = dict(zip(reply[0::2], reply[1::2]))
    items = [(item[0].decode(), float(item[1].decode())) for item in fields[b"items"]]
    return int(fields[b"version"]), items


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dim", type=int, default=4)
    parser.add_argument("--products", type=int, default=12)
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--epsilon", type=float, default=0.3)
    parser.add_argument("--decisions-topic", default="decisions")
    parser.add_argument("--rewards-topic", default="rewards")
    args = parser.parse_args()

    client = redis.Redis(host="127.0.0.1", port=args.redis_port, protocol=2)
    # Both topics keyed by event id with the same partitioner (librdkafka's
    # default, named here to make the contract visible).
    producer = Producer({
        "bootstrap.servers": args.brokers,
        "partitioner": "consistent_random",
        "enable.idempotence": True,
        "linger.ms": 5,
    })
    failures = []

    def delivered(error, message):
        if error is not None:
            failures.append(str(error))

    rng = random.Random(args.seed)
    products = [f"p{i}" for i in range(args.products)]
    sent = {"decisions": 0, "rewards": 0, "unknown_rewards": 0}
    for i in range(args.events):
        event_id = f"py-{args.seed}-{i}"
        context = [round(rng.uniform(-1.0, 1.0), 3) for _ in range(args.dim)]
        version, items = rank(client, args.model, context, products, args.top, args.epsilon, event_id)
        # The same event on the same model gets the same reply.
        if i % 50 == 0:
            again = rank(client, args.model, context, products, args.top, args.epsilon, event_id)
            if again[0] == version and again[1] != items:
                sys.exit(f"{event_id}: the same event id got another reply: {items} then {again[1]}")
        decision = {
            "event_id": event_id,
            "model": args.model,
            "model_version": version,
            "policy": f"egreedy:{args.epsilon}",
            "context": context,
            "shown": [{"product_id": pid, "position": pos, "probability": p} for pos, (pid, p) in enumerate(items)],
            "timestamp": now_ms(),
        }
        producer.produce(args.decisions_topic, key=event_id, value=json.dumps(decision), on_delivery=delivered)
        sent["decisions"] += 1
        # The visitor: a click on one shown item in about half the visits;
        # sometimes a second reward for it (a purchase after the click), and
        # sometimes an explicit 0 for an item above it.
        if rng.random() < 0.5:
            position = rng.randrange(len(items))
            rewards = [(items[position][0], 1.0)]
            if rng.random() < 0.3:
                rewards.append((items[position][0], 0.5))
            if position > 0 and rng.random() < 0.3:
                rewards.append((items[0][0], 0.0))
            for product_id, value in rewards:
                reward = {"event_id": event_id, "product_id": product_id, "reward": value, "timestamp": now_ms()}
                producer.produce(args.rewards_topic, key=event_id, value=json.dumps(reward), on_delivery=delivered)
                sent["rewards"] += 1
        producer.poll(0)
    # A reward for an event id no decision has: the join dead-letters it.
    unknown = {"event_id": f"py-{args.seed}-unknown", "product_id": "p0", "reward": 1.0, "timestamp": now_ms()}
    producer.produce(args.rewards_topic, key=unknown["event_id"], value=json.dumps(unknown), on_delivery=delivered)
    sent["unknown_rewards"] += 1
    remaining = producer.flush(30)
    if remaining or failures:
        sys.exit(f"not delivered: {remaining} in flight, failures {failures[:3]}")
    print(json.dumps(sent))


if __name__ == "__main__":
    main()
