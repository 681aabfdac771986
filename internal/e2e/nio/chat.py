"""matrix-nio (Debian's python3-matrix-nio, which speaks the /r0 paths)
against machi: two staff members register, log in, chat in a room, page
back through history, share a picture, type and read; then log out.

Run by internal/e2e/nio_test.go with MACHI_URL set. Every step prints a
TAP line; the first failure ends the run with exit status 1.
"""

import asyncio
import io
import os
import struct
import sys
import uuid
import zlib

import nio
from nio import responses as R

BASE = os.environ["MACHI_URL"]
STEP_SECONDS = 15

step_no = 0


def ok(label):
    global step_no
    step_no += 1
    print(f"ok {step_no} - {label}", flush=True)


def fail(label, detail):
    global step_no
    step_no += 1
    print(f"not ok {step_no} - {label}: {detail}", flush=True)
    sys.exit(1)


async def expect(label, coro, kind):
    """Awaits coro (bounded) and fails the run unless it gives a kind."""
    try:
        resp = await asyncio.wait_for(coro, STEP_SECONDS)
    except Exception as err:  # noqa: BLE001 - any failure ends the run
        fail(label, repr(err))
    if isinstance(resp, tuple):  # upload answers (response, decryption info)
        resp = resp[0]
    if not isinstance(resp, kind):
        fail(label, f"{type(resp).__name__}: {getattr(resp, 'message', resp)}")
    ok(label)
    return resp


def tiny_png():
    """A 2x2 red PNG, made here so the test ships no binary file."""

    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


async def sync_until(client, since, label, found):
    """Syncs (long-polling) until found(response) is true, bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while loop.time() < deadline:
        resp = await asyncio.wait_for(client.sync(timeout=3000, since=since), STEP_SECONDS)
        if not isinstance(resp, R.SyncResponse):
            fail(label, f"{type(resp).__name__}: {getattr(resp, 'message', resp)}")
        since = resp.next_batch
        if found(resp):
            ok(label)
            return since
    fail(label, "not seen within 20 s")


def timeline_bodies(resp, room_id):
    room = resp.rooms.join.get(room_id)
    if room is None:
        return []
    return [getattr(ev, "body", None) for ev in room.timeline.events]


async def main():
    suffix = uuid.uuid4().hex[:8]
    alice = nio.AsyncClient(BASE, f"nio_alice_{suffix}")
    bob = nio.AsyncClient(BASE, f"nio_bob_{suffix}")
    try:
        await run(alice, bob, suffix)
    finally:
        await alice.close()
        await bob.close()
    print(f"1..{step_no}")


async def run(alice, bob, suffix):
    await expect("alice registers", alice.register(f"nio_alice_{suffix}", "alice-pass", "nio"), R.RegisterResponse)
    await expect("bob registers", bob.register(f"nio_bob_{suffix}", "bob-pass", "nio"), R.RegisterResponse)

    # A fresh session by password, as a returning user would.
    await expect("alice logs out of the registration session", alice.logout(), R.LogoutResponse)
    login = await expect("alice logs in", alice.login("alice-pass", device_name="nio laptop"), R.LoginResponse)
    who = await expect("whoami", alice.whoami(), R.WhoamiResponse)
    if who.user_id != login.user_id:
        fail("whoami names the user", f"{who.user_id} != {login.user_id}")
    wrong = nio.AsyncClient(BASE, alice.user_id)
    try:
        await expect("a wrong password is refused", wrong.login("nope"), R.LoginError)
    finally:
        await wrong.close()

    await expect("alice sets her display name", alice.set_displayname("佐藤 花子"), R.ProfileSetDisplayNameResponse)
    name = await expect("bob reads it", bob.get_displayname(alice.user_id), R.ProfileGetDisplayNameResponse)
    if name.displayname != "佐藤 花子":
        fail("display name round-trips", repr(name.displayname))

    room = await expect(
        "alice creates a room inviting bob",
        alice.room_create(name="防災課", topic="訓練の連絡", invite=[bob.user_id]),
        R.RoomCreateResponse,
    )
    room_id = room.room_id
    since_bob = await sync_until(bob, None, "bob sees the invite", lambda r: room_id in r.rooms.invite)
    await expect("bob joins", bob.join(room_id), R.JoinResponse)
    members = await expect("joined members", alice.joined_members(room_id), R.JoinedMembersResponse)
    if {m.user_id for m in members.members} != {alice.user_id, bob.user_id}:
        fail("both are members", repr(members.members))

    since_alice = (await expect("alice syncs", alice.sync(timeout=0), R.SyncResponse)).next_batch
    for i in range(12):
        await expect(
            f"alice sends message {i}",
            alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": f"訓練 {i}"}),
            R.RoomSendResponse,
        )
    since_bob = await sync_until(bob, since_bob, "bob receives the last message", lambda r: "訓練 11" in timeline_bodies(r, room_id))

    sent = await expect(
        "bob replies",
        bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "了解しました"}),
        R.RoomSendResponse,
    )
    since_alice = await sync_until(alice, since_alice, "alice receives the reply", lambda r: "了解しました" in timeline_bodies(r, room_id))

    # Back-pagination from the present to the room's start, in pages.
    token = since_alice
    seen = []
    for _ in range(10):
        page = await expect("alice pages back", alice.room_messages(room_id, start=token, limit=5), R.RoomMessagesResponse)
        seen.extend(getattr(ev, "body", None) for ev in page.chunk)
        if not page.chunk or page.end is None:
            break
        token = page.end
    texts = [b for b in seen if b is not None and b.startswith("訓練")]
    if texts != [f"訓練 {i}" for i in reversed(range(12))]:
        fail("history comes back newest first, all of it", repr(texts))
    ok("history is complete and in order")

    ctx = await expect("context around bob's reply", alice.room_context(room_id, sent.event_id, limit=2), R.RoomContextResponse)
    if getattr(ctx.event, "body", None) != "了解しました":
        fail("context names the event", repr(ctx.event))

    # A picture: upload by the legacy media API, send, download.
    png = tiny_png()
    up = await expect("bob uploads a picture", bob.upload(io.BytesIO(png), "image/png", "photo.png", filesize=len(png)), R.UploadResponse)
    await expect(
        "bob sends it",
        bob.room_send(room_id, "m.room.message", {"msgtype": "m.image", "body": "photo.png", "url": up.content_uri}),
        R.RoomSendResponse,
    )
    down = await expect("alice downloads it", alice.download(mxc=up.content_uri), R.DownloadResponse)
    if down.body != png:
        fail("the picture round-trips", f"{len(down.body)} bytes")

    await expect("alice types", alice.room_typing(room_id, True, timeout=10000), R.RoomTypingResponse)
    since_bob = await sync_until(
        bob,
        since_bob,
        "bob sees alice typing",
        lambda r: any(
            isinstance(ev, nio.TypingNoticeEvent) and alice.user_id in ev.users
            for ev in (r.rooms.join[room_id].ephemeral if room_id in r.rooms.join else [])
        ),
    )
    await expect("alice marks the reply read", alice.room_read_markers(room_id, sent.event_id, sent.event_id), R.RoomReadMarkersResponse)

    topic = await expect("state: the topic", alice.room_get_state_event(room_id, "m.room.topic"), R.RoomGetStateEventResponse)
    if topic.content.get("topic") != "訓練の連絡":
        fail("the topic is the one set", repr(topic.content))
    await expect("an unknown room's state is an error", alice.room_get_state(f"!nope{suffix}:localhost"), R.RoomGetStateError)

    await expect("bob leaves", bob.room_leave(room_id), R.RoomLeaveResponse)
    await expect("alice logs out", alice.logout(), R.LogoutResponse)
    await expect("her token no longer works", alice.whoami(), R.WhoamiError)


asyncio.run(main())
