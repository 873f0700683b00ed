"""The lean intake's MQTT 5 codec, as a parser of untrusted bytes: whatever the socket hands
it — random bytes, a stream cut anywhere, packets split across reads — it either returns
whole packets exactly as sent or raises MalformedPacket; never another exception, and
never a PUBLISH it did not read whole (the intake acknowledges only what it was given)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import mqttcodec as codec

topics = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00+#"), min_size=1, max_size=60
)
publishes = st.builds(
    lambda topic, payload, qos, retain, dup, pid: codec.Publish(
        topic, payload, qos, retain, dup and qos == 1, pid if qos else 0
    ),
    topics,
    st.binary(max_size=300),
    st.integers(0, 1),
    st.booleans(),
    st.booleans(),
    st.integers(1, 65535),
)


def encode(p: codec.Publish) -> bytes:
    return codec.publish(p.topic, p.payload, p.qos, p.retain, p.packet_id, p.dup)


def feed_in_pieces(stream: bytes, cuts: list[int]) -> list[codec.Packet]:
    parser = codec.Parser()
    out: list[codec.Packet] = []
    last = 0
    for cut in [*sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]:
        out += parser.feed(stream[last:cut])
        last = cut
    assert parser.pending == 0
    return out


@given(st.lists(publishes, max_size=20), st.lists(st.integers(0, 10_000), max_size=30))
def test_publishes_split_anywhere_come_out_whole_and_in_order(
    packets: list[codec.Publish], cuts: list[int]
) -> None:
    stream = b"".join(encode(p) for p in packets)
    assert feed_in_pieces(stream, cuts) == packets


@given(st.lists(publishes, min_size=1, max_size=10), st.data())
def test_a_truncated_stream_yields_only_the_packets_it_holds_whole(
    packets: list[codec.Publish], data: st.DataObject
) -> None:
    encoded = [encode(p) for p in packets]
    stream = b"".join(encoded)
    cut = data.draw(st.integers(0, len(stream) - 1))
    parser = codec.Parser()
    got = parser.feed(stream[:cut])
    whole = 0
    size = 0
    for e in encoded:
        if size + len(e) > cut:
            break
        size += len(e)
        whole += 1
    assert got == packets[:whole]
    assert parser.pending == cut - size


@settings(max_examples=400)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=5))
def test_random_bytes_never_crash_the_parser(blob: bytes, cuts: list[int]) -> None:
    parser = codec.Parser()
    last = 0
    try:
        for cut in [*sorted(c % (len(blob) + 1) for c in cuts), len(blob)]:
            for p in parser.feed(blob[last:cut]):
                if isinstance(p, codec.Publish):
                    assert p.topic
                    assert p.qos in (0, 1)
                    assert (p.packet_id != 0) == (p.qos == 1)
            last = cut
    except codec.MalformedPacket:
        pass


@given(st.lists(publishes, min_size=1, max_size=5), st.binary(min_size=1, max_size=40))
def test_garbage_after_good_packets_never_turns_into_a_publish_of_its_own_bytes(
    packets: list[codec.Publish], garbage: bytes
) -> None:
    """Good packets before the garbage come out; the garbage is either refused or, if it
    happens to be a valid packet, parsed as one — never mixed into the good ones."""
    stream = b"".join(encode(p) for p in packets)
    parser = codec.Parser()
    assert parser.feed(stream) == packets
    try:
        for p in parser.feed(garbage):
            assert not isinstance(p, codec.Publish) or encode(p) in garbage
    except codec.MalformedPacket:
        pass


@given(st.lists(st.integers(1, 65535), min_size=1, max_size=50))
def test_one_buffer_of_pubacks_is_that_many_pubacks_in_order(ids: list[int]) -> None:
    assert codec.Parser().feed(codec.pubacks(ids)) == [codec.PubAck(i, 0) for i in ids]


def test_control_packets_of_the_server() -> None:
    stream = (
        b"\x20\x03\x01\x00\x00"  # CONNACK, session present, success, no properties
        b"\x20\x06\x00\x00\x03\x21\x00\x0a"  # CONNACK with Receive Maximum 10
        b"\x90\x04\x00\x01\x00\x01"  # SUBACK id 1, granted QoS 1
        b"\xd0\x00"  # PINGRESP
        b"\xe0\x01\x8e"  # DISCONNECT: session taken over
    )
    assert codec.Parser().feed(stream) == [
        codec.ConnAck(True, 0, 65535, ""),
        codec.ConnAck(False, 0, 10, ""),
        codec.SubAck(1, (1,)),
        codec.PingResp(),
        codec.Disconnect(0x8E, ""),
    ]


def test_qos2_publish_unknown_packets_and_overlong_lengths_are_malformed() -> None:
    for bad in (
        codec.publish("a/b", b"x", 1, packet_id=5).replace(b"\x32", b"\x34", 1),  # QoS 2
        b"\x32\x05\x00\x00\x00\x01\x00",  # empty topic (no alias allowed)
        b"\x32\x06\x00\x01a\x00\x00\x00",  # packet id 0
        b"\x10\x00",  # CONNECT from a server
        b"\x30\xff\xff\xff\xff\x01",  # a length of five bytes
    ):
        try:
            codec.Parser().feed(bad)
        except codec.MalformedPacket:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_connect_asks_for_a_persistent_session_with_receive_maximum() -> None:
    """MQTT 5 §3.1: clean start off, Session Expiry Interval and Receive Maximum set,
    credentials in the payload."""
    connect = codec.connect(
        "taza-1",
        keepalive_s=30,
        session_expiry_s=604800,
        receive_maximum=20000,
        username="u",
        password="p",
    )
    assert connect[0] == 0x10
    body = connect[2:]
    assert body[:7] == b"\x00\x04MQTT\x05"
    assert body[7] == 0xC0  # user name + password flags; clean start (0x02) off
    assert body[8:10] == (30).to_bytes(2, "big")
    assert body[10:19] == b"\x08\x11\x00\x09\x3a\x80\x21\x4e\x20"
    assert body[19:] == b"\x00\x06taza-1\x00\x01u\x00\x01p"
    assert connect[1] == len(body)
