// An encrypted chat between two cities: alice on city-a, bob on city-b,
// each with matrix-js-sdk's Rust crypto talking to their own machi. Alice's
// client finds bob's device keys and claims his one-time key through
// city-a (which asks city-b), sends him the room key as a to-device
// message that crosses the federation, and bob's client decrypts her
// message, which arrived through city-b.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import * as sdk from "matrix-js-sdk";

import { register, startAndSync, step, waitForPublishedKeys } from "./lib.mjs";

const urlA = process.env.MACHI_URL_A;
const urlB = process.env.MACHI_URL_B;
const clients = [];
let passed = false;
after(() => {
    for (const c of clients) c.stopClient();
    setTimeout(() => process.exit(passed ? 0 : 1), 1_000).unref();
});

async function cryptoClient(url, reg, label) {
    const client = sdk.createClient({ baseUrl: url, userId: reg.user_id, accessToken: reg.access_token, deviceId: reg.device_id });
    clients.push(client);
    await step(`${label}: init Rust crypto`, () => client.initRustCrypto({ useIndexedDB: false }));
    return client;
}

test("matrix-js-sdk Rust crypto: an encrypted room between two cities", { timeout: 120_000 }, async () => {
    assert.ok(urlA && urlB, "MACHI_URL_A and MACHI_URL_B must be set");
    const suffix = randomBytes(4).toString("hex");
    const aliceReg = await step("register alice on city-a", () => register(`calice-${suffix}`, `pw-a-${suffix}`, urlA));
    const bobReg = await step("register bob on city-b", () => register(`cbob-${suffix}`, `pw-b-${suffix}`, urlB));
    const alice = await cryptoClient(urlA, aliceReg, "alice");
    const bob = await cryptoClient(urlB, bobReg, "bob");
    await startAndSync(alice, "alice");
    await startAndSync(bob, "bob");
    await waitForPublishedKeys(bobReg, "bob", urlB);

    const keys = await step("alice queries bob's device keys across cities", () =>
        alice.getCrypto().getUserDeviceInfo([bob.getUserId()], true),
    );
    assert.ok(keys.get(bob.getUserId())?.has(bob.getDeviceId()), "bob's device is not in alice's device list");

    const { room_id: roomId } = await step("alice creates an encrypted room and invites bob", () =>
        alice.createRoom({
            preset: sdk.Preset.PrivateChat,
            invite: [bob.getUserId()],
            initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
        }),
    );
    await step("bob joins from city-b", async () => {
        for (let i = 0; i < 100 && !bob.getRoom(roomId); i++) await new Promise((r) => setTimeout(r, 100));
        await bob.joinRoom(roomId);
    }, 30_000);
    await step("alice sees bob joined", async () => {
        for (let i = 0; i < 200; i++) {
            if (alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join") return;
            await new Promise((r) => setTimeout(r, 100));
        }
        throw new Error("bob's join never reached alice");
    }, 30_000);

    const secret = `合同委員会の非公開資料 ${suffix}`;
    const decrypted = new Promise((resolve, reject) => {
        bob.on(sdk.MatrixEventEvent.Decrypted, (event) => {
            if (event.getRoomId() !== roomId || event.getType() !== "m.room.message") return;
            if (event.isDecryptionFailure()) reject(new Error(`decryption failed: ${event.decryptionFailureReason}`));
            else resolve(event);
        });
    });
    const sent = await step("alice sends an encrypted message", () => alice.sendTextMessage(roomId, secret), 30_000);
    const got = await step("bob decrypts it on city-b", () => decrypted, 45_000);
    assert.equal(got.getId(), sent.event_id);
    assert.equal(got.getWireType(), "m.room.encrypted");
    assert.equal(got.getContent().body, secret);
    passed = true;
});
