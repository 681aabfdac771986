// End-to-end test of machi with matrix-js-sdk, run by internal/e2e/js_test.go
// (node --test chat.test.mjs, MACHI_URL = a running machi with open
// registration and no rate limits).
//
// Two users register, one logs in, they share a room and talk through /sync,
// and the history is read back through /messages.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import * as sdk from "matrix-js-sdk";

import { baseUrl, describe, register, startAndSync, step, waitForMessage } from "./lib.mjs";

const clients = [];
let passed = false;
after(() => {
    for (const c of clients) c.stopClient();
    // stopClient does not leave node's event loop empty: matrix-js-sdk keeps
    // a timer armed for every request's local timeout (up to 110 s for a
    // long-polling /sync) after the request is done or aborted, and re-arms
    // its /capabilities poll when a request in flight at stopClient settles.
    // node:test reports only once the loop drains, so exit instead of waiting.
    setTimeout(() => process.exit(passed ? 0 : 1), 1_000).unref();
});

test("matrix-js-sdk: register, login, room, /sync, /messages", { timeout: 60_000 }, async () => {
    assert.ok(baseUrl, "MACHI_URL is not set");
    const suffix = randomBytes(4).toString("hex");
    const aliceLocal = `alice-${suffix}`;
    const bobLocal = `bob-${suffix}`;
    const alicePassword = `alice-pw-${suffix}`;

    // Registration.
    const aliceReg = await step("register alice", () => register(aliceLocal, alicePassword));
    const bobReg = await step("register bob", () => register(bobLocal, `bob-pw-${suffix}`));
    assert.match(aliceReg.user_id, new RegExp(`^@${aliceLocal}:`));
    assert.match(bobReg.user_id, new RegExp(`^@${bobLocal}:`));

    // Login with a password on a fresh client.
    const loginRes = await step("login alice", () =>
        sdk.createClient({ baseUrl }).loginRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: aliceLocal },
            password: alicePassword,
            initial_device_display_name: "machi e2e js login",
        }),
    );
    assert.equal(loginRes.user_id, aliceReg.user_id);
    assert.ok(loginRes.access_token, `login: no access_token in ${JSON.stringify(loginRes)}`);
    assert.ok(loginRes.device_id, `login: no device_id in ${JSON.stringify(loginRes)}`);
    assert.notEqual(loginRes.device_id, aliceReg.device_id, "login reused the registration device");

    const alice = sdk.createClient({
        baseUrl,
        userId: loginRes.user_id,
        accessToken: loginRes.access_token,
        deviceId: loginRes.device_id,
    });
    const bob = sdk.createClient({
        baseUrl,
        userId: bobReg.user_id,
        accessToken: bobReg.access_token,
        deviceId: bobReg.device_id,
    });
    clients.push(alice, bob);

    const whoami = await step("alice whoami", () => alice.whoami());
    assert.equal(whoami.user_id, aliceReg.user_id);

    // Room.
    const roomName = `machi e2e ${suffix}`;
    const { room_id: roomId } = await step("alice createRoom", () =>
        alice.createRoom({ name: roomName, preset: sdk.Preset.PrivateChat, invite: [bob.getUserId()] }),
    );
    assert.match(roomId, /^!/);
    await step("bob joinRoom", () => bob.joinRoom(roomId));

    // Sync.
    await startAndSync(alice, "alice");
    await startAndSync(bob, "bob");

    const hello = `hello bob ${suffix}`;
    const bobGets = waitForMessage(bob, roomId, alice.getUserId(), hello);
    const sent = await step("alice sendTextMessage", () => alice.sendTextMessage(roomId, hello));
    assert.match(sent.event_id, /^\$/);
    const got = await step("bob receives alice's message via /sync", () => bobGets.promise);
    assert.equal(got.getId(), sent.event_id);
    assert.equal(got.getRoomId(), roomId);

    const reply = `hello alice ${suffix}`;
    const aliceGets = waitForMessage(alice, roomId, bob.getUserId(), reply);
    const replied = await step("bob sendTextMessage", () => bob.sendTextMessage(roomId, reply));
    const gotReply = await step("alice receives bob's reply via /sync", () => aliceGets.promise);
    assert.equal(gotReply.getId(), replied.event_id);

    // The synced room has the name and both members joined.
    const bobRoom = bob.getRoom(roomId);
    assert.ok(bobRoom, "bob's client has no room object");
    assert.equal(bobRoom.name, roomName);
    assert.equal(bobRoom.getMember(alice.getUserId())?.membership, "join");
    assert.equal(bobRoom.getMember(bob.getUserId())?.membership, "join");

    // History, read back by a third client (bob's token, no sync).
    const reader = sdk.createClient({ baseUrl, userId: bobReg.user_id, accessToken: bobReg.access_token });
    const history = await step("/messages backwards", () =>
        reader.createMessagesRequest(roomId, null, 50, sdk.Direction.Backward),
    );
    assert.ok(Array.isArray(history.chunk), `/messages: no chunk in ${JSON.stringify(history)}`);
    const bodies = history.chunk.filter((e) => e.type === "m.room.message").map((e) => e.content?.body);
    assert.ok(bodies.includes(hello), `/messages lacks alice's message: ${JSON.stringify(bodies)}`);
    assert.ok(bodies.includes(reply), `/messages lacks bob's reply: ${JSON.stringify(bodies)}`);
    assert.ok(
        bodies.indexOf(reply) < bodies.indexOf(hello),
        `/messages dir=b is not newest first: ${JSON.stringify(bodies)}`,
    );
    const create = history.chunk.find((e) => e.type === "m.room.create");
    assert.ok(create, `/messages lacks m.room.create: ${JSON.stringify(history.chunk.map((e) => e.type))}`);
    assert.equal(create.room_id ?? roomId, roomId);
    passed = true;
});
