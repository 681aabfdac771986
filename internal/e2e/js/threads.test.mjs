// Threads, edits and reactions with matrix-js-sdk's own thread support
// (startClient with threadSupport: true, as Element runs it), run by internal/e2e/js_test.go.
//
// Bob replies in a thread on alice's message; alice's live client builds the
// thread from /sync and the bundled m.thread aggregation; the thread list
// (/v1/threads), /v1/relations and /event answer as the SDK expects; a
// threaded read receipt reaches the other member with its thread_id.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import * as sdk from "matrix-js-sdk";

import { baseUrl, describe, register, startAndSync, step, within, STEP_MS } from "./lib.mjs";

const clients = [];
let passed = false;
after(() => {
    for (const c of clients) c.stopClient();
    setTimeout(() => process.exit(passed ? 0 : 1), 1_000).unref();
});

/** Polls cond every 100 ms until it is true, bounded; state describes
 * what was seen last when it never is. */
async function until(label, cond, state = () => "") {
    const deadline = Date.now() + STEP_MS - 1_000;
    while (Date.now() < deadline) {
        if (await cond()) return;
        await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`timed out: ${label}; last seen: ${state()}`);
}

test("matrix-js-sdk: threads, edits, reactions, threaded receipts", { timeout: 90_000 }, async () => {
    assert.ok(baseUrl, "MACHI_URL is not set");
    const suffix = randomBytes(4).toString("hex");
    const aliceReg = await step("register alice", () => register(`talice-${suffix}`, `pw-a-${suffix}`));
    const bobReg = await step("register bob", () => register(`tbob-${suffix}`, `pw-b-${suffix}`));
    const make = (reg) => sdk.createClient({ baseUrl, userId: reg.user_id, accessToken: reg.access_token, deviceId: reg.device_id });
    const alice = make(aliceReg);
    const bob = make(bobReg);
    // Sends go through clients that do not sync. A syncing matrix-js-sdk
    // that gets the remote echo of its own thread reply or relation before
    // the send's response retries the send and finally marks it failed
    // (its updatePendingEvent finds the event in no room timeline). machi
    // holds an event back from its sender's /sync until the reply is
    // written (rooms.Request.WakeSenderLater), but the spec-checking proxy
    // between this test and machi can still reorder the two.
    const aliceSend = make(aliceReg);
    const bobSend = make(bobReg);
    clients.push(alice, bob);

    const { room_id: roomId } = await step("alice createRoom", () =>
        alice.createRoom({ preset: sdk.Preset.PublicChat, name: `threads ${suffix}` }),
    );
    await step("bob joinRoom", () => bob.joinRoom(roomId));
    // Element turns thread support on when it starts the client.
    await startAndSync(alice, "alice", { threadSupport: true });
    await startAndSync(bob, "bob", { threadSupport: true });
    assert.ok(sdk.Thread.hasServerSideSupport, "matrix-js-sdk does not see server-side thread support");

    const { event_id: rootId } = await step("alice sends the root", () => aliceSend.sendTextMessage(roomId, `root ${suffix}`));
    await step("bob sees the root", () => until("root in bob's room", () => !!bob.getRoom(roomId)?.findEventById(rootId)));
    const replies = [];
    for (const body of ["one", "two"]) {
        const res = await step(`bob replies ${body} in the thread`, () =>
            bobSend.sendMessage(roomId, rootId, { msgtype: "m.text", body: `reply ${body}` }),
        );
        replies.push(res.event_id);
    }

    // Alice's live client builds the thread from /sync.
    await step("alice's client has the thread with both replies", () =>
        until("thread of two on alice's client", () => {
            const th = alice.getRoom(roomId)?.getThread(rootId);
            return th && th.length === 2 && th.replyToEvent?.getId() === replies[1];
        }, () => {
            const room = alice.getRoom(roomId);
            const th = room?.getThread(rootId);
            return JSON.stringify({ threads: room?.getThreads().map((t) => t.id), length: th?.length, latest: th?.replyToEvent?.getId(),
                replies, timeline: room?.getLiveTimeline().getEvents().map((e) => [e.getId(), e.getType(), e.threadRootId]) });
        }),
    );

    // An edit and a reaction from alice; a second identical reaction is
    // refused as the spec says.
    const reaction = { "m.relates_to": { rel_type: "m.annotation", event_id: rootId, key: "👍" } };
    await step("alice reacts", () => aliceSend.sendEvent(roomId, "m.reaction", reaction));
    await assert.rejects(
        () => aliceSend.sendEvent(roomId, "m.reaction", reaction),
        (err) => err.httpStatus === 400 && err.errcode === "M_DUPLICATE_ANNOTATION",
        "a duplicate reaction was not refused with M_DUPLICATE_ANNOTATION",
    );
    const { event_id: editId } = await step("alice edits the root", () =>
        aliceSend.sendEvent(roomId, "m.room.message", {
            msgtype: "m.text",
            body: `* root edited ${suffix}`,
            "m.new_content": { msgtype: "m.text", body: `root edited ${suffix}` },
            "m.relates_to": { rel_type: "m.replace", event_id: rootId },
        }),
    );

    // A third client, with no sync, reads through the SDK's own calls.
    const reader = sdk.createClient({ baseUrl, userId: bobReg.user_id, accessToken: bobReg.access_token });
    const root = await step("/event of the root", () => reader.fetchRoomEvent(roomId, rootId));
    const rel = root.unsigned?.["m.relations"];
    assert.equal(rel?.["m.thread"]?.count, 2, `m.thread: ${JSON.stringify(rel)}`);
    assert.equal(rel?.["m.thread"]?.latest_event?.event_id, replies[1]);
    assert.equal(rel?.["m.thread"]?.current_user_participated, true);
    assert.equal(rel?.["m.replace"]?.event_id, editId, `m.replace: ${JSON.stringify(rel)}`);
    assert.equal(root.content.body, `root ${suffix}`, "the server rewrote the edited event's content");

    const list = await step("/threads", () =>
        reader.createThreadListMessagesRequest(roomId, null, 20, sdk.Direction.Backward, sdk.ThreadFilterType.All),
    );
    assert.deepEqual(list.chunk.map((e) => e.event_id), [rootId]);
    const mine = await step("/threads?include=participated for alice", () =>
        alice.createThreadListMessagesRequest(roomId, null, 20, sdk.Direction.Backward, sdk.ThreadFilterType.My),
    );
    assert.deepEqual(mine.chunk.map((e) => e.event_id), [rootId], "alice sent the root: she took part");

    const thread = await step("/relations m.thread", () => reader.relations(roomId, rootId, "m.thread", null, { dir: sdk.Direction.Backward }));
    assert.deepEqual(thread.events.map((e) => e.getId()), [...replies].reverse());
    const reactions = await step("/relations m.annotation m.reaction", () => reader.relations(roomId, rootId, "m.annotation", "m.reaction"));
    assert.deepEqual(reactions.events.map((e) => e.getContent()["m.relates_to"].key), ["👍"]);

    // A threaded read receipt: the SDK adds thread_id itself; bob's
    // client receives it with the thread's root as thread_id.
    const gotReceipt = new Promise((resolve) => {
        const onReceipt = (ev, room) => {
            if (room.roomId !== roomId) return;
            const r = ev.getContent()?.[replies[1]]?.["m.read"]?.[alice.getUserId()];
            if (r) {
                bob.off(sdk.RoomEvent.Receipt, onReceipt);
                resolve(r);
            }
        };
        bob.on(sdk.RoomEvent.Receipt, onReceipt);
    });
    const latest = alice.getRoom(roomId).getThread(rootId).replyToEvent;
    await step("alice sends a read receipt in the thread", () => alice.sendReadReceipt(latest));
    const receipt = await step("bob receives it", () => within(STEP_MS, "threaded receipt", gotReceipt));
    assert.equal(receipt.thread_id, rootId, `receipt: ${JSON.stringify(receipt)}`);
    passed = true;
});
