// The native addon for the tests that need it: where it did not build they skip with the reason,
// and in CI (CI=true) they run and fail on `addon()`, which asserts that it loaded.
import assert from 'node:assert/strict';
import { loadAddon, type NativeAddon } from '../../src/native.js';

const state = loadAddon();

/** node:test options for a test that needs the addon. */
export const needsAddon: { skip?: string } = state.ok
  ? {}
  : process.env.CI === 'true'
    ? {} // in CI the addon must load: the test fails on addon()
    : { skip: `the addon is not built (${state.why})` };

/** The addon; fails the test if it did not load. */
export function addon(): NativeAddon {
  assert.ok(state.ok, `the addon loads (${state.ok ? '' : state.why})`);
  return state.addon;
}
