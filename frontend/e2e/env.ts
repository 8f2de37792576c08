/** Shared by playwright.config.ts (which hands it to `konan up`) and the specs. */
export const ADMIN_USERNAME = "admin";
export const ADMIN_PASSWORD = "e2e-admin-Secret-9f3b";
