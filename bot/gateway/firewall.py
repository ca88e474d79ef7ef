"""The host side of the bot's network: its bridge reaches the gateway's ports and nothing else.

Docker's ``internal`` network stops traffic from the bridge to other interfaces (FORWARD), but the
host's own addresses (its other ports, the Forge or ollama on the host, the bot's web port) are
delivered locally (INPUT). One chain of ours, jumped to from INPUT for that bridge only, accepts the
gateway's ports and drops the rest, IPv4 and IPv6. Setting it up again replaces it (idempotent).
"""

from __future__ import annotations

import asyncio


class FirewallError(Exception):
    """iptables refused or is missing; the message says what to do."""


def chain_name(bridge: str) -> str:
    return f"DISPATCHBOT-{bridge}"[:28]


async def _run(binary: str, *args: str) -> tuple[int, str]:
    try:
        process = await asyncio.create_subprocess_exec(
            binary, "-w", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        return 127, f"{binary} is not installed"
    _, err = await process.communicate()
    return process.returncode or 0, err.decode(errors="replace").strip()


async def _must(binary: str, *args: str) -> None:
    code, err = await _run(binary, *args)
    if code:
        raise FirewallError(f"`{binary} {' '.join(args)}` failed: {err or code} (egress = \"gateway\" needs "
                            "iptables and root to close the bot's network; egress = \"open\" does without)")


async def close(bridge: str, address: str, ports: list[int]) -> None:
    """Let ``bridge`` reach ``address`` on ``ports`` (TCP) and nothing else on this host."""
    chain = chain_name(bridge)
    for binary in ("iptables", "ip6tables"):
        await _run(binary, "-N", chain)  # already there is fine: it is refilled
        await _must(binary, "-F", chain)
        if binary == "iptables":
            for port in ports:
                await _must(binary, "-A", chain, "-p", "tcp", "-d", address, "--dport", str(port), "-j", "ACCEPT")
        await _must(binary, "-A", chain, "-j", "DROP")
        if (await _run(binary, "-C", "INPUT", "-i", bridge, "-j", chain))[0]:
            await _must(binary, "-I", "INPUT", "1", "-i", bridge, "-j", chain)


async def remove(bridge: str) -> None:
    """Take the chain away again (when the network itself goes)."""
    chain = chain_name(bridge)
    for binary in ("iptables", "ip6tables"):
        while (await _run(binary, "-D", "INPUT", "-i", bridge, "-j", chain))[0] == 0:
            pass
        await _run(binary, "-F", chain)
        await _run(binary, "-X", chain)
