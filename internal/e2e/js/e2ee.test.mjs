// End-to-end encryption through machi with matrix-js-sdk's Rust crypto (no
// browser: the WebAssembly crypto runs in node with an in-memory store).
// Alice and bob register, publish their device keys, and share an
// encrypted room: alice's client claims bob's one-time key, sends him the
// room key as an Olm to-device message, and bob's client decrypts her
// Megolm message. Then alice logs a second device in and bob's client
// learns of it through /sync's device_lists.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import * as sdk from "matrix-js-sdk";

import { baseUrl, register, startAndSync, step, waitForPublishedKeys } from "./lib.mjs";

const clients = [];
let passed = false;
after(() => {
    for (const c of clients) c.stopClient();
    setTimeout(() => process.exit(passed ? 0 : 1), 1_000).unref();
});

/** A client with Rust crypto for a registered user. */
async function cryptoClient(reg, label) {
    const client = sdk.createClient({ baseUrl, userId: reg.user_id, accessToken: reg.access_token, deviceId: reg.device_id });
    clients.push(client);
    await step(`${label}: init Rust crypto`, () => client.initRustCrypto({ useIndexedDB: false }));
    return client;
}

/** Resolves with the first decrypted m.room.message in roomId. */
function waitForDecrypted(client, roomId) {
    return new Promise((resolve, reject) => {
        const check = (event) => {
            if (event.getRoomId() !== roomId || event.getType() !== "m.room.message") return;
            if (event.isDecryptionFailure()) {
                reject(new Error(`decryption failed: ${event.decryptionFailureReason}`));
                return;
            }
            resolve(event);
        };
        client.on(sdk.MatrixEventEvent.Decrypted, check);
    });
}

test("matrix-js-sdk Rust crypto: an encrypted room between two users", { timeout: 90_000 }, async () => {
    assert.ok(baseUrl, "MACHI_URL is not set");
    const suffix = randomBytes(4).toString("hex");
    const aliceReg = await step("register alice", () => register(`ealice-${suffix}`, `pw-a-${suffix}`));
    const bobReg = await step("register bob", () => register(`ebob-${suffix}`, `pw-b-${suffix}`));
    const alice = await cryptoClient(aliceReg, "alice");
    const bob = await cryptoClient(bobReg, "bob");
    await startAndSync(alice, "alice");
    await startAndSync(bob, "bob");
    await waitForPublishedKeys(bobReg, "bob");

    // Both devices published their keys: each side can see the other's.
    const keys = await step("alice queries bob's device keys", () =>
        alice.getCrypto().getUserDeviceInfo([bob.getUserId()], true),
    );
    assert.ok(keys.get(bob.getUserId())?.has(bob.getDeviceId()), "bob's device is not in alice's device list");

    const { room_id: roomId } = await step("alice creates an encrypted room with bob", () =>
        alice.createRoom({
            preset: sdk.Preset.PrivateChat,
            invite: [bob.getUserId()],
            initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
        }),
    );
    await step("bob joins", async () => {
        for (let i = 0; i < 50 && !bob.getRoom(roomId); i++) await new Promise((r) => setTimeout(r, 100));
        await bob.joinRoom(roomId);
    });
    await step("alice sees bob joined", async () => {
        for (let i = 0; i < 100; i++) {
            if (alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join") return;
            await new Promise((r) => setTimeout(r, 100));
        }
        throw new Error("bob's join never reached alice");
    });
    assert.ok(await alice.getCrypto().isEncryptionEnabledInRoom(roomId), "alice's client does not see the room as encrypted");

    const secret = `秘密の会議資料 ${suffix}`;
    const decrypted = waitForDecrypted(bob, roomId);
    const sent = await step("alice sends an encrypted message", () => alice.sendTextMessage(roomId, secret), 30_000);
    const got = await step("bob decrypts it", () => decrypted, 30_000);
    assert.equal(got.getId(), sent.event_id);
    assert.equal(got.getWireType(), "m.room.encrypted", "the message was not sent encrypted");
    assert.equal(got.getContent().body, secret);

    // The server stored only ciphertext.
    const raw = await step("read the stored event", () => bob.fetchRoomEvent(roomId, sent.event_id));
    assert.equal(raw.type, "m.room.encrypted");
    assert.ok(!JSON.stringify(raw).includes(secret), "plaintext reached the server");

    // A new device of alice's reaches bob through device_lists.
    const second = await step("alice logs in a second device", () =>
        sdk.createClient({ baseUrl }).loginRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: `ealice-${suffix}` },
            password: `pw-a-${suffix}`,
        }),
    );
    const alice2 = await cryptoClient(second, "alice's second device");
    await startAndSync(alice2, "alice's second device");
    await step("bob's client learns of alice's second device", async () => {
        for (let i = 0; i < 100; i++) {
            const devices = await bob.getCrypto().getUserDeviceInfo([alice.getUserId()]);
            if (devices.get(alice.getUserId())?.has(second.device_id)) return;
            await new Promise((r) => setTimeout(r, 200));
        }
        throw new Error("alice's second device never appeared for bob");
    }, 30_000);
    passed = true;
});
