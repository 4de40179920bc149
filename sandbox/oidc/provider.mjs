// A real OpenID Connect provider for kubegate's sign-in tests and demo: the npm package oidc-provider
// (OpenID Certified), installed into .tools/oidc-provider by scripts/install-oidc-provider.sh.
//
//   node sandbox/oidc/provider.mjs SETTINGS.json
//
// SETTINGS.json: {"port": P, "clients": [...client metadata...], "jwks": {"keys": [private JWKs]},
//                 "users": {"alice": {"email": ..., "groups": [...]}, ...}}
// Sign-in uses oidc-provider's development interactions (a login form: any password, the login name
// must be one of "users"); consent is granted at once (first-party client). The ID token carries the
// email and groups claims (conformIdTokenClaims off). Device authorization grant on. Prints
// "listening <issuer>" once it serves.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', '..', '.tools', 'oidc-provider', 'package.json'));
const { default: Provider } = await import(require.resolve('oidc-provider'));

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${settings.port}`;
const users = settings.users;

const provider = new Provider(issuer, {
  clients: settings.clients,
  jwks: settings.jwks,
  cookies: { keys: ['kubegate-test-cookie-key'] },
  scopes: ['openid', 'email', 'groups', 'offline_access'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
  },
  ttl: { IdToken: 3600, AccessToken: 3600, AuthorizationCode: 600, DeviceCode: 600, Interaction: 600,
         Session: 3600, Grant: 3600 },
  async findAccount(ctx, id) {
    const user = users[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: user.email, email_verified: true, groups: user.groups };
      },
    };
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email groups');
    await grant.save();
    return grant;
  },
});
provider.proxy = false;
provider.listen(settings.port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
