/** Per-request bindings of the admin app: `trusted` is set by the Unix-socket server only, never from the request. */
export type AdminEnv = { Bindings: { trusted?: boolean } };
