// Helpers shared by the matrix-js-sdk end-to-end tests: a quiet logger,
// steps with timeouts that name what failed, registration through UIA, and
// waiting for sync and for messages.

import assert from "node:assert/strict";

import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

export const baseUrl = process.env.MACHI_URL;
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

export const STEP_MS = 15_000;

/** Rejects when p does not settle within ms. */
export function within(ms, label, p) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${label}`)), ms);
    });
    return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Describes a failed request, with the server's reply when there is one. */
export function describe(err) {
    if (err && err.httpStatus !== undefined) {
        const where = err.url ? ` from ${err.url.replace(/access_token=[^&]*/, "access_token=…")}` : "";
        return `HTTP ${err.httpStatus}${where}: ${JSON.stringify(err.data)}`;
    }
    return String(err?.stack ?? err);
}

/** Runs one step with a timeout, naming the step on failure. */
export async function step(label, fn, ms = STEP_MS) {
    try {
        return await within(ms, label, Promise.resolve().then(fn));
    } catch (err) {
        throw new Error(`${label}: ${describe(err)}`, { cause: err });
    }
}

/** Registers localpart through the m.login.dummy UIA stage. */
export async function register(localpart, password, url = baseUrl) {
    const client = sdk.createClient({ baseUrl: url });
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

/** Starts client (with startClient options opts) and waits for its first
 * sync to reach PREPARED. */
export function startAndSync(client, label, opts = {}) {
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
        await client.startClient({ initialSyncLimit: 10, ...opts });
        await prepared;
    });
}

/** Resolves with the first live m.room.message in roomId from sender with body. */
export function waitForMessage(client, roomId, sender, body) {
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


/**
 * Waits until the device of a login or registration has its keys on the
 * server. Rust crypto uploads them in the background after startClient; a
 * query made before that caches a user without the device, and without a
 * shared room nothing tells the querier otherwise.
 */
export function waitForPublishedKeys(login, label, url = baseUrl) {
    return step(`${label}: device keys published`, async () => {
        for (let i = 0; i < 100; i++) {
            const res = await fetch(`${url}/_matrix/client/v3/keys/query`, {
                method: "POST",
                headers: { Authorization: `Bearer ${login.access_token}`, "Content-Type": "application/json" },
                body: JSON.stringify({ device_keys: { [login.user_id]: [login.device_id] } }),
            });
            const body = await res.json();
            assert.equal(res.status, 200, `POST /keys/query: ${JSON.stringify(body)}`);
            if (body.device_keys?.[login.user_id]?.[login.device_id]) return;
            await new Promise((r) => setTimeout(r, 100));
        }
        throw new Error(`the keys of ${login.device_id} never reached the server`);
    });
}
