import asyncio

from concilium import Agent, SimConfig, SimServer, debate, run


async def main() -> None:
    # The simulated server is a test double: it answers arithmetic right 60% of the time.
    async with SimServer(SimConfig(seed=7)) as server:
        model = server.spec()  # or ModelSpec("hosted_vllm/<model>", api_base="http://<vllm>/v1")
        solvers = [Agent(name, model, temperature=0.8) for name in ("alice", "bob", "carol")]
        result = await run(debate(solvers, rounds=2), "What is 12 * 7?")
    for turn in result.transcript:
        print(f"round {turn['round']} {turn['agent']:>5} saw {turn['saw']}: {turn['answer']}")
    print(result.answer, result.votes["counts"], result.calls, "calls")


asyncio.run(main())
