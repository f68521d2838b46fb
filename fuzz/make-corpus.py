#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into fuzz/corpus/<target>/.

Small, real inputs: ring-buffer records laid out as bpf/wasmtune.h says
(host byte order: little-endian here), the built-in policies' manifests,
the configuration examples of docs/, a journal with every record kind,
control requests and an answer, runtime-process frames. Run from the repository root:
`python3 fuzz/make-corpus.py`; the files are committed.
"""

import re
import shutil
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"

AF_INET, AF_INET6 = 2, 10


def addr(text: str) -> bytes:
    import ipaddress

    ip = ipaddress.ip_address(text)
    return ip.packed.ljust(16, b"\0")


def name16(text: str) -> bytes:
    return text.encode().ljust(16, b"\0")


def tcp_buffer(direction, family, port, netns, buf, limit, queued, srtt, remote):
    return struct.pack("<HBBHHQIIII16s", 1, direction, family, port, 0, netns, buf, limit, queued, srtt, addr(remote))


def memory_pressure(protocol, level, netns, pages, limits):
    return struct.pack("<HBBIQQ3Q", 2, protocol, level, 0, netns, pages, *limits)


def connection_summary(family, rport, lport, netns, remote, cc, min_rtt, srtt, rate, segs, retrans, acked, rcvd, ms):
    return struct.pack(
        "<HBBHHQ16s16sIIQIIQQQQ", 4, family, 0, rport, lport, netns, addr(remote), name16(cc),
        min_rtt, srtt, rate, segs, retrans, acked, rcvd, ms, 0,
    )


def retransmit_burst(family, rport, netns, remote, cc, segs, retrans):
    return struct.pack("<HBBHHQ16s16sII", 5, family, 0, rport, 0, netns, addr(remote), name16(cc), segs, retrans)


def backlog_drops(cpu, netns, drops):
    return struct.pack("<HHIQQ", 6, 0, cpu, netns, drops)


def neighbour_table(family, ifindex, netns, entries, limit, space):
    return struct.pack("<HBBIQIIQ", 7, family, 0, ifindex, netns, entries, limit, space)


def udp_drop(cause, locked, port, netns, buf, drops):
    return struct.pack("<HBBHHQIIQ", 8, cause, locked, port, 0, netns, buf, 0, drops)


NETNS = 0x1122334455667788

EVENTS = {
    "tcp-buffer-v4-receive": tcp_buffer(0, AF_INET, 40000, NETNS, 6291456, 6291456, 123456, 250, "192.0.2.7"),
    "tcp-buffer-v6-send": tcp_buffer(1, AF_INET6, 443, NETNS, 4194304, 4194304, 4000000, 12000, "2001:db8::1:2"),
    "tcp-buffer-v4-mapped": tcp_buffer(0, AF_INET6, 5201, 1, 131072, 131072, 130000, 80, "::ffff:10.1.2.3"),
    "memory-pressure-tcp": memory_pressure(0, 0, NETNS, 50000, (46000, 61000, 92000)),
    "memory-pressure-udp-exhausted": memory_pressure(1, 1, 4096, 93000, (46000, 61000, 92000)),
    "connection-summary-v4-bbr": connection_summary(
        AF_INET, 5201, 40000, NETNS, "10.0.0.2", "bbr", 30, 45, 1000000, 9000, 12, 12000000, 500, 1500),
    "connection-summary-v6-cubic": connection_summary(
        AF_INET6, 443, 51000, 3, "2001:db8::9", "cubic", 80000, 90000, 250000, 400, 0, 500000, 20000, 60000),
    "retransmit-burst-v4": retransmit_burst(AF_INET, 80, NETNS, "198.51.100.4", "reno", 640, 40),
    "backlog-drops": backlog_drops(1, NETNS, 250),
    "neighbour-table-v4": neighbour_table(AF_INET, 2, NETNS, 1000, 1024, 65534),
    "neighbour-table-v6": neighbour_table(AF_INET6, 3, NETNS, 120, 128, 2**63),
    "udp-drop-queue-full": udp_drop(0, 0, 9000, NETNS, 212992, 42),
    "udp-drop-memory-locked": udp_drop(1, 1, 53, NETNS, 4096, 7),
    # 3 was syn-overflow; the poller reports it now.
    "retired-kind-3": struct.pack("<H30x", 3),
    "too-short": b"\x01",
}

JOURNAL = "\n".join([
    '{"kind":"session-start","pid":4242,"time":1764000000000,"boot_id":"6c1f3c1e-0000-4000-8000-000000000001"}',
    '{"kind":"intent","seq":1,"time":1764000000100,"policy":"tcp-buffer","netns":4026531840,"netns_name":"init",'
    '"tunable":"net.ipv4.tcp_rmem","old":{"integers":[4096,131072,6291456]},"new":{"integers":[4096,131072,7864320]},'
    '"scenario":"need to increase TCP buffer size(s)","reason":"receive buffers reached the limit"}',
    '{"kind":"applied","seq":1,"time":1764000000101}',
    '{"kind":"intent","seq":2,"time":1764000000200,"policy":"tcp-cong","netns":4026531840,"netns_name":"init",'
    '"tunable":"net.ipv4.tcp_congestion_control","old":{"text":"cubic"},"new":{"text":"bbr"},'
    '"scenario":"congestion","reason":"losses without queueing"}',
    '{"kind":"failed","seq":2,"time":1764000000201,"error":"wrote (bbr) but read back (cubic)","found":{"text":"cubic"}}',
    '{"kind":"peer-intent","seq":3,"time":1764000000300,"policy":"tcp-cong","netns":4026531840,"netns_name":"init",'
    '"peer":"10.0.0.0/8","settings":{"congestion":"bbr","initial-cwnd":20},"scenario":"per-destination congestion",'
    '"reason":"the peer is far away"}',
    '{"kind":"applied","seq":3,"time":1764000000301}',
    '{"kind":"rollback-intent","seq":4,"time":1764000000400,"netns":4026531840,"netns_name":"init",'
    '"tunable":"net.ipv4.tcp_rmem","from":{"integers":[4096,131072,7864320]},"to":{"integers":[4096,131072,6291456]}}',
    '{"kind":"rolled-back","seq":4,"time":1764000000401}',
    '{"kind":"rollback-complete","time":1764000000500}',
    '{"kind":"intent","seq":5,"time":1764000000600,"policy":"administrator","netns":4026531840,"netns_name":"init",'
    '"tunable":"net.core.rmem_max","old":{"integers":[212992]},"new":{"integers":[4194304]},'
    '"scenario":"administrator","reason":"put back after a racing write"}',
    '{"kind":"intent","seq":6,"time":1764000000700,"policy":"udp-buffer","netns":7,"netns_name":"rx",'
    '"tunable":"net.ipv4.udp_mem","old":{"integers":[46000,61000,92000]},"new":{"integers":[46000,61000,115000]},'
    '"scenario":"udp memory","reason":"exhausted"}',
]) + "\n"

SNAPSHOT = (
    '{"kind":"snapshot","time":1764000001000,"boot_id":"6c1f3c1e-0000-4000-8000-000000000001","session_pid":4242,'
    '"max_seq":9,"voided_by_reboot":0,'
    '"tunables":[[{"netns":"init","tunable":"net.ipv4.tcp_wmem"},{"netns_cookie":4026531840,'
    '"original":{"integers":[4096,16384,4194304]},"last_written":{"integers":[4096,16384,5242880]},"unconfirmed":null,'
    '"changes":1,"last_policy":"tcp-buffer","last_scenario":"grow","last_reason":"send buffers reached the limit",'
    '"last_time":1764000000900,"last_seq":8}]],'
    '"scenarios":{"grow":1},'
    '"pending":[{"kind":"intent","seq":9,"time":1764000000950,"policy":"tcp-buffer","netns":4026531840,'
    '"netns_name":"init","tunable":"net.ipv4.tcp_wmem","old":{"integers":[4096,16384,5242880]},'
    '"new":{"integers":[4096,16384,6553600]},"scenario":"grow","reason":"again"}],'
    '"peers":[{"netns_cookie":4026531840,"netns":"init","peer":"10.0.0.0/8","settings":{"congestion":"bbr"},'
    '"policy":"tcp-cong","scenario":"s","reason":"r","time":1764000000300,"pid":4242,"confirmed":true}],'
    '"peers_ended":[]}\n'
    '{"kind":"applied","seq":9,"time":1764000001001}\n'
)

CONTROL = {
    "status": '{"command":"status"}\n',
    "policy-list": '{"command":"policy-list"}\n',
    "policy-enable": '{"command":"policy-enable","name":"vendor-tuner"}\n',
    "policy-disable": '{"command":"policy-disable","name":"tcp-buffer"}\n',
    "summary": '{"command":"summary"}\n',
    "rollback": '{"command":"rollback"}\n',
    "override-clear": '{"command":"override-clear","tunable":"net.ipv4.tcp_rmem"}\n',
    "override-clear-netns": '{"command":"override-clear","tunable":"net.ipv4.tcp_rmem","netns":"rx"}\n',
    "response-ok": '{"ok":true,"schema":1,"result":{"policies":[{"name":"tcp-buffer","state":"running","faults":0}]}}\n',
    "response-error": '{"ok":false,"schema":1,"error":"not a request: expected value at line 1 column 1"}\n',
}


def toml_blocks(path: Path):
    return re.findall(r"```toml\n(.*?)```", path.read_text(), re.S)


def custom_section(name: str, data: bytes) -> bytes:
    def leb(n):
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    body = leb(len(name)) + name.encode() + data
    return b"\0" + leb(len(body)) + body


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pstr(text: str) -> bytes:
    data = text.encode()
    return varint(len(data)) + data


def frame(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


# Frames from the runtime process, in postcard (host/src/runtime/protocol.rs):
# enum variants by index, integers as varints, strings and lists length first.
RUNTIME = {
    "hello": frame(b"\x00" + varint(2) + pstr("e2b34a52dfde9739")),
    "loaded-from-cache": frame(b"\x01\x00\x00"),
    "loaded-stored": frame(b"\x01\x00\x01"),
    "loaded-refused": frame(b"\x01\x01" + pstr("cannot compile: bad")),
    "done-ok": frame(b"\x03\x00"),
    "done-fault": frame(b"\x03\x01\x02" + pstr("deadline: interrupted")),
    "log": frame(b"\x04\x00\x02" + pstr("raising tcp_rmem")),
    "read": frame(b"\x04\x01" + varint(4026531840) + pstr("net.ipv4.tcp_rmem")),
    "request-change": frame(
        b"\x04\x02" + varint(4026531840) + pstr("net.ipv4.tcp_rmem")
        + b"\x00" + varint(3) + varint(8192) + varint(262144) + varint(12582912)
        + pstr("need to increase TCP buffer size(s)") + pstr("reason")
    ),
    "state-set": frame(b"\x04\x07" + pstr("peers") + varint(3) + b"abc"),
    "two-frames": frame(b"\x04\x06" + pstr("peers")) + frame(b"\x03\x00"),
    "too-long": struct.pack("<I", 0xFFFFFFFF) + b"\x03\x00",
}


def write(target: str, name: str, data):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def main():
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    for name, record in EVENTS.items():
        write("events", name, record)

    for policy in sorted((ROOT / "policies").glob("*/policy.toml")):
        name = policy.parent.name
        text = policy.read_text()
        write("manifest", f"{name}.toml", text)
    tcp_buffer_manifest = (ROOT / "policies/tcp-buffer/policy.toml").read_bytes()
    # A component header and the manifest section alone: what from_component looks for.
    write("manifest", "component-with-section.wasm",
          b"\0asm\x0d\0\x01\0" + custom_section("wasmtune-manifest", tcp_buffer_manifest))
    for index, block in enumerate(toml_blocks(ROOT / "docs/policy-authors.md")):
        if "[policy]" in block:
            write("manifest", f"policy-authors-{index}.toml", block)
    for index, block in enumerate(toml_blocks(ROOT / "docs/per-destination.md")):
        write("manifest", f"per-destination-{index}.toml",
              '[policy]\nname = "tcp-cong"\nversion = "0.1.0"\ndescription = "d"\n\n' + block)

    docs = [ROOT / "docs/configuration.md", ROOT / "docs/policy-lifecycle.md", ROOT / "docs/policy-authors.md"]
    docs += sorted((ROOT / "docs/tuners").glob("*.md"))
    for doc in docs:
        for index, block in enumerate(toml_blocks(doc)):
            if "[policy]" in block or "[tcp]" in block and "[policies." not in block:
                continue
            write("config", f"{doc.stem}-{index}.toml", block)

    write("journal", "every-record-kind.jsonl", JOURNAL)
    write("journal", "compacted.jsonl", SNAPSHOT)
    write("journal", "torn-tail.jsonl", JOURNAL + '{"kind":"intent","seq":7,"ti')
    write("journal", "missing-newline.jsonl", JOURNAL.rstrip("\n"))

    for name, line in CONTROL.items():
        write("control", name, line)

    for name, data in RUNTIME.items():
        write("runtime", name, data)


if __name__ == "__main__":
    main()
