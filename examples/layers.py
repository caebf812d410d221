import asyncio

from concilium.app import Session, load

# built once: parsed, checked, agents and graph made; the override changes the file's 8 samples
workflow = load("examples/self_consistency.yaml", overrides={"workflow.samples": 3})


async def main() -> None:
    # "sim": the simulated server (a test double); "local": the embedded engine; or a URL
    async with Session("sim") as session:
        result = await session.run(workflow, "What is 6 * 7?")
    print(result.answer, result.votes["counts"], result.calls, "request")


asyncio.run(main())
