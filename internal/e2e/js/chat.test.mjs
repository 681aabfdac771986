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
import { logger } from "matrix-js-sdk/lib/logger.js";

const baseUrl = process.env.MACHI_URL;
const verbose = !!process.env.MACHI_JS_DEBUG;

// matrix-js-sdk logs every request and sync at debug level; keep the test
// output readable unless MACHI_JS_DEBUG is set.
if (!verbose) {
    logger.setLevel("silent", false);
    const getChild = logger.getChild.bind(logger);
    logger.getChild = (ns) => {
        const child = getChild(ns);
        child.setLevel("silent", false);
        return child;
    };
    // Child loggers made when the SDK was loaded bind their methods to the
    // console at call time; quiet the chatty levels.
    for (const m of ["debug", "info", "log", "trace"]) console[m] = () => {};
}

const STEP_MS = 15_000;

/** Rejects when p does not settle within ms. */
function within(ms, label, p) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${label}`)), ms);
    });
    return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Describes a failed request, with the server's reply when there is one. */
function describe(err) {
    if (err && err.httpStatus !== undefined) {
        const where = err.url ? ` from ${err.url.replace(/access_token=[^&]*/, "access_token=…")}` : "";
        return `HTTP ${err.httpStatus}${where}: ${JSON.stringify(err.data)}`;
    }
    return String(err?.stack ?? err);
}

/** Runs one step with a timeout, naming the step on failure. */
async function step(label, fn, ms = STEP_MS) {
    try {
        return await within(ms, label, Promise.resolve().then(fn));
    } catch (err) {
        throw new Error(`${label}: ${describe(err)}`, { cause: err });
    }
}

/** Registers localpart through the m.login.dummy UIA stage. */
async function register(localpart, password) {
    const client = sdk.createClient({ baseUrl });
    const req = { username: localpart, password, initial_device_display_name: "machi e2e js" };
    let session;
    try {
        const res = await client.registerRequest(req);
        // A server might register without UIA; accept that too.
        if (res.access_token) return res;
    } catch (err) {
        assert.equal(err.httpStatus, 401, `first /register: ${describe(err)}`);
        session = err.data?.session;
        assert.ok(session, `first /register 401 has no session: ${describe(err)}`);
        const flows = err.data?.flows ?? [];
        assert.ok(
            flows.some((f) => (f.stages ?? []).includes("m.login.dummy")),
            `no m.login.dummy flow offered: ${JSON.stringify(flows)}`,
        );
    }
    const res = await client.registerRequest({ ...req, auth: { type: "m.login.dummy", session } });
    assert.ok(res.access_token, `register ${localpart}: no access_token in ${JSON.stringify(res)}`);
    assert.ok(res.user_id, `register ${localpart}: no user_id in ${JSON.stringify(res)}`);
    assert.ok(res.device_id, `register ${localpart}: no device_id in ${JSON.stringify(res)}`);
    return res;
}

/** Starts client and waits for its first sync to reach PREPARED. */
function startAndSync(client, label) {
    const prepared = new Promise((resolve, reject) => {
        const onSync = (state, _prev, data) => {
            if (state === sdk.SyncState.Prepared || state === sdk.SyncState.Syncing) {
                client.off(sdk.ClientEvent.Sync, onSync);
                resolve();
            } else if (state === sdk.SyncState.Error) {
                client.off(sdk.ClientEvent.Sync, onSync);
                reject(new Error(`${label} sync error: ${describe(data?.error)}`));
            }
        };
        client.on(sdk.ClientEvent.Sync, onSync);
    });
    return step(`${label}: start client, wait for sync PREPARED`, async () => {
        await client.startClient({ initialSyncLimit: 10 });
        await prepared;
    });
}

/** Resolves with the first live m.room.message in roomId from sender with body. */
function waitForMessage(client, roomId, sender, body) {
    let onTimeline;
    const p = new Promise((resolve) => {
        onTimeline = (event, room, toStartOfTimeline) => {
            if (toStartOfTimeline || room?.roomId !== roomId) return;
            if (event.getType() !== "m.room.message" || event.getSender() !== sender) return;
            if (event.getContent()?.body !== body) return;
            resolve(event);
        };
        client.on(sdk.RoomEvent.Timeline, onTimeline);
    });
    return { promise: p.finally(() => client.off(sdk.RoomEvent.Timeline, onTimeline)) };
}

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
