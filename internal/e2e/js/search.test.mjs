// Server-side search through matrix-js-sdk, the way Element calls it
// (searchRoomEvents: order_by recent, one event of context each side,
// profiles; backPaginateRoomEventsSearch for the next page). Run by
// TestSearchMatrixJSSDK (internal/e2e/search_test.go) with MACHI_URL set.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import * as sdk from "matrix-js-sdk";

import { baseUrl, register, step } from "./lib.mjs";

let passed = false;
after(() => {
    // See chat.test.mjs: matrix-js-sdk leaves timers armed.
    setTimeout(() => process.exit(passed ? 0 : 1), 1_000).unref();
});

test("matrix-js-sdk: search finds 課内会議資料 by 会議, with context and pages", { timeout: 60_000 }, async () => {
    assert.ok(baseUrl, "MACHI_URL is not set");
    const suffix = randomBytes(4).toString("hex");
    const reg = await step("register alice", () => register(`alice-${suffix}`, `alice-pw-${suffix}`));
    const alice = sdk.createClient({ baseUrl, userId: reg.user_id, accessToken: reg.access_token, deviceId: reg.device_id });
    await step("set display name", () => alice.setDisplayName("総務 花子"));
    const { room_id: roomId } = await step("createRoom", () => alice.createRoom({ preset: sdk.Preset.PrivateChat }));

    await step("send", () => alice.sendTextMessage(roomId, "前置きです"));
    const docs = await step("send", () => alice.sendTextMessage(roomId, "課内会議資料を共有します"));
    await step("send", () => alice.sendTextMessage(roomId, "よろしくお願いします"));

    const found = await step("searchRoomEvents 会議", () =>
        alice.searchRoomEvents({ term: "会議", filter: { rooms: [roomId] } }),
    );
    assert.equal(found.results.length, 1, `results: ${JSON.stringify(found.results.map((r) => r.context.getEvent().getId()))}`);
    const ctx = found.results[0].context;
    assert.equal(ctx.getEvent().getId(), docs.event_id);
    assert.equal(ctx.getEvent().getContent().body, "課内会議資料を共有します");
    const bodies = ctx.getTimeline().map((e) => e.getContent().body);
    assert.deepEqual(bodies, ["前置きです", "課内会議資料を共有します", "よろしくお願いします"]);
    assert.ok(found.highlights.includes("会議"), `highlights: ${JSON.stringify(found.highlights)}`);
    assert.equal(found.next_batch, undefined);

    // Pages of the newest first, as Element scrolls back.
    for (let i = 0; i < 12; i++) {
        await alice.sendTextMessage(roomId, `防災訓練 schedule ${i}`);
    }
    const first = await step("searchRoomEvents schedule", () => alice.searchRoomEvents({ term: "schedule" }));
    assert.equal(first.count, 12);
    assert.equal(first.results.length, 10);
    assert.ok(first.next_batch, "no next_batch after the first page");
    const all = await step("backPaginateRoomEventsSearch", () => alice.backPaginateRoomEventsSearch(first));
    const seen = all.results.map((r) => r.context.getEvent().getContent().body);
    assert.deepEqual(seen, Array.from({ length: 12 }, (_, i) => `防災訓練 schedule ${11 - i}`));
    assert.equal(all.next_batch, undefined);
    passed = true;
});
