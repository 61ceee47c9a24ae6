// Three tiers, one config. ESM throughout (execa 9 and ip-cidr 4 are ESM-only),
// so jest runs under node --experimental-vm-modules with ts-jest's ESM preset.
const common = {
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: {
    '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.test.json' }],
  },
  testEnvironment: 'node',
};

export default {
  // Integration and e2e tests drive real commands and a real dockerd.
  testTimeout: 180_000,
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
    { ...common, displayName: 'integration', testMatch: ['<rootDir>/test/integration/**/*.test.ts'] },
    { ...common, displayName: 'e2e', testMatch: ['<rootDir>/test/e2e/**/*.test.ts'] },
    // Several Docker hosts on this machine (test/lib/rig.ts): the overlay's end-to-end tests.
    { ...common, displayName: 'multihost', testMatch: ['<rootDir>/test/multihost/**/*.test.ts'] },
  ],
};
