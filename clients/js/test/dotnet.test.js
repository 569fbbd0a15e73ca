// What the client sends a group with .NET members (issue 28): generic names in the
// group's runtime version, nothing that would drop a .NET member's connection, and .NET's
// answer to a message without an Id.
//   node --test clients/js/test/

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  checkSendable,
  dotnetGenericName,
  EMPTY_GUID,
  isDotnetGuid,
  newMessageId,
  normalizeTypeName,
  runtimeVersionOf,
  withRuntimeVersion,
} from "../wsproxy.js";

const LIST = "System.Collections.Generic.List`1";

test("a generic name's runtime version is read, rewritten, and ignored when matching", () => {
  const dotnet7 = dotnetGenericName(LIST, ["System.String"], { version: "7.0.0.0" });
  const dotnet8 = dotnetGenericName(LIST, ["System.String"]);
  assert.equal(runtimeVersionOf(dotnet7), "7.0.0.0");
  assert.equal(runtimeVersionOf("System.String"), null);
  assert.equal(withRuntimeVersion(dotnet8, "7.0.0.0"), dotnet7);
  assert.equal(normalizeTypeName(dotnet7), normalizeTypeName(dotnet8));
  const own = "Game.Box`1[[Game.Move, Game, Version=1.2.0.0, Culture=neutral, PublicKeyToken=null]]";
  assert.equal(withRuntimeVersion(own, "7.0.0.0"), own);
});

test("what would drop a .NET member's connection is refused before it is sent", () => {
  assert.throws(() => checkSendable("System.Guid", newMessageId()), /System\.Guid cannot be received/);
  assert.throws(() => checkSendable("System.Int32", 2 ** 31), /does not fit a System\.Int32.*"System\.Int64"/);
  assert.throws(() => checkSendable("System.Int32", 1.5), /not an integer/);
  assert.throws(() => checkSendable("System.Int64", 2 ** 70), /does not fit a System\.Int64/);
  assert.throws(() => checkSendable(dotnetGenericName(LIST, ["System.Int32"]), [1, 2 ** 40]), /List<System\.Int32> element/);
  assert.equal(checkSendable("System.Int64", 2 ** 40), null);
  assert.equal(checkSendable("Game.Owner", { OwnerId: newMessageId() }), null);
});

test("what a .NET member drops without a word is a warning", () => {
  assert.match(checkSendable("System.String", ""), /drops it without a word/);
  assert.match(checkSendable("Game.Move", null), /drops it without a word/);
});

test("ids are D-format GUIDs; Guid.Empty is one", () => {
  const id = newMessageId();
  assert.ok(isDotnetGuid(id) && id === id.toLowerCase());
  assert.ok(isDotnetGuid(EMPTY_GUID) && isDotnetGuid(id.toUpperCase()));
  assert.ok(!isDotnetGuid(`{${id}}`) && !isDotnetGuid(id.replaceAll("-", "")) && !isDotnetGuid("request-1"));
});
