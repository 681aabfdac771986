// Server-side key backup through machi with matrix-js-sdk's Rust crypto.
// Alice creates a key backup with the crypto API, alice and bob exchange
// encrypted messages, and alice's client backs the room keys up on its own.
// Then both clients stop, alice logs a new device in, which cannot read the
// old messages until it restores the backup with the backup's decryption
// key; after that it decrypts them. No key can come from another device:
// none is running.

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

/** A client with Rust crypto for a login or registration response. */
async function cryptoClient(login, label) {
    const client = sdk.createClient({ baseUrl, userId: login.user_id, accessToken: login.access_token, deviceId: login.device_id });
    clients.push(client);
    await step(`${label}: init Rust crypto`, () => client.initRustCrypto({ useIndexedDB: false }));
    return client;
}

/** Resolves with the decrypted event eventId of roomId. */
function waitForDecrypted(client, roomId, eventId) {
    return new Promise((resolve, reject) => {
        const check = (event) => {
            if (event.getId() !== eventId) return;
            if (event.isDecryptionFailure()) {
                reject(new Error(`decryption of ${eventId} failed: ${event.decryptionFailureReason}`));
                return;
            }
            client.off(sdk.MatrixEventEvent.Decrypted, check);
            resolve(event);
        };
        client.on(sdk.MatrixEventEvent.Decrypted, check);
        // It may have been decrypted before anyone listened.
        const known = client.getRoom(roomId)?.findEventById(eventId);
        if (known && !known.isBeingDecrypted() && (known.isDecryptionFailure() || known.getClearContent())) check(known);
    });
}

/** The current backup version as machi reports it to the user. */
async function serverBackup(login) {
    const res = await fetch(`${baseUrl}/_matrix/client/v3/room_keys/version`, {
        headers: { Authorization: `Bearer ${login.access_token}` },
    });
    const body = await res.json();
    assert.equal(res.status, 200, `GET /room_keys/version: ${JSON.stringify(body)}`);
    return body;
}

/** Decrypts a stored event afresh with client's crypto. */
async function decryptStored(client, roomId, eventId) {
    const event = new sdk.MatrixEvent(await client.fetchRoomEvent(roomId, eventId));
    await client.decryptEventIfNeeded(event);
    return event;
}

test("matrix-js-sdk Rust crypto: a new device restores the key backup and reads old messages", { timeout: 150_000 }, async () => {
    assert.ok(baseUrl, "MACHI_URL is not set");
    const suffix = randomBytes(4).toString("hex");
    const password = `pw-a-${suffix}`;
    const aliceReg = await step("register alice", () => register(`balice-${suffix}`, password));
    const bobReg = await step("register bob", () => register(`bbob-${suffix}`, `pw-b-${suffix}`));
    const alice = await cryptoClient(aliceReg, "alice");
    const bob = await cryptoClient(bobReg, "bob");
    await startAndSync(alice, "alice");
    await startAndSync(bob, "bob");
    await waitForPublishedKeys(aliceReg, "alice");
    await waitForPublishedKeys(bobReg, "bob");

    // A key backup, made by the crypto API: a new Curve25519 key, the
    // version signed by alice's device.
    await step("alice creates a key backup", () => alice.getCrypto().resetKeyBackup(), 30_000);
    // resetKeyBackup starts using the backup in the background; wait for it.
    const check = await step("alice's client checks the backup", () => alice.getCrypto().checkKeyBackupAndEnable());
    assert.ok(check?.trustInfo?.trusted, `the new backup is not trusted: ${JSON.stringify(check?.trustInfo)}`);
    const version = await alice.getCrypto().getActiveSessionBackupVersion();
    assert.ok(version, "no active backup version after resetKeyBackup");
    const backupKey = await alice.getCrypto().getSessionBackupPrivateKey();
    assert.ok(backupKey instanceof Uint8Array && backupKey.length === 32, "no backup decryption key");
    const created = await step("read the backup from machi", () => serverBackup(aliceReg));
    assert.equal(created.version, version);
    assert.equal(created.algorithm, "m.megolm_backup.v1.curve25519-aes-sha2");
    assert.ok(created.auth_data?.public_key, "auth_data has no public key");
    assert.ok(created.auth_data?.signatures?.[aliceReg.user_id], "auth_data is not signed by alice");

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

    const fromAlice = `防災計画の草案 ${suffix}`;
    const fromBob = `了解しました ${suffix}`;
    const sentA = await step("alice sends an encrypted message", () => alice.sendTextMessage(roomId, fromAlice), 30_000);
    const sentB = await step("bob sends an encrypted message", async () => {
        for (let i = 0; i < 100 && !bob.getRoom(roomId)?.findEventById(sentA.event_id); i++) {
            await new Promise((r) => setTimeout(r, 100));
        }
        return bob.sendTextMessage(roomId, fromBob);
    }, 30_000);
    const gotB = await step("alice decrypts bob's message", () => waitForDecrypted(alice, roomId, sentB.event_id), 30_000);
    assert.equal(gotB.getContent().body, fromBob);

    // Alice's client backs up both sessions (hers and bob's) on its own,
    // within its random delay of up to ten seconds.
    const backedUp = await step("alice's client backs the room keys up", async () => {
        for (let i = 0; i < 120; i++) {
            const info = await serverBackup(aliceReg);
            if (info.count >= 2) return info;
            await new Promise((r) => setTimeout(r, 500));
        }
        throw new Error("the room keys never reached the backup");
    }, 70_000);
    assert.notEqual(backedUp.etag, created.etag, "the etag did not change with the keys");

    // Nobody else is running: the keys can only come from the backup.
    alice.stopClient();
    bob.stopClient();

    const login = await step("alice logs in a new device", () =>
        sdk.createClient({ baseUrl }).loginRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: `balice-${suffix}` },
            password,
        }),
    );
    const alice2 = await cryptoClient(login, "alice's new device");
    await startAndSync(alice2, "alice's new device");

    const before = await step("the new device tries the old message", () => decryptStored(alice2, roomId, sentA.event_id));
    assert.ok(before.isDecryptionFailure(), "the new device read the old message without the backup");

    await step("store the backup decryption key", () => alice2.getCrypto().storeSessionBackupPrivateKey(backupKey, version));
    const restored = await step("restore the key backup", () => alice2.getCrypto().restoreKeyBackup(), 30_000);
    assert.ok(restored.imported >= 2, `restored ${JSON.stringify(restored)}`);

    const afterA = await step("decrypt alice's old message", () => decryptStored(alice2, roomId, sentA.event_id));
    assert.ok(!afterA.isDecryptionFailure(), `alice's message: ${afterA.decryptionFailureReason}`);
    assert.equal(afterA.getContent().body, fromAlice);
    const afterB = await step("decrypt bob's old message", () => decryptStored(alice2, roomId, sentB.event_id));
    assert.ok(!afterB.isDecryptionFailure(), `bob's message: ${afterB.decryptionFailureReason}`);
    assert.equal(afterB.getContent().body, fromBob);
    passed = true;
});
