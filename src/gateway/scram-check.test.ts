import { describe, expect, it } from 'vitest';
import { ScramCheck } from './scram-check.js';

const initial = (first: string, length = Buffer.byteLength(first)) => {
  const len = Buffer.alloc(4);
  len.writeInt32BE(length);
  return Buffer.concat([Buffer.from('SCRAM-SHA-256\0'), len, Buffer.from(first)]);
};
const problem = (err: { code: string; message: string; detail?: string } | undefined) =>
  err && `${err.code} ${err.message}${err.detail ? `: ${err.detail}` : ''}`;
const proof = Buffer.alloc(32, 7).toString('base64');

describe('ScramCheck', () => {
  it('takes the messages libpq, node-postgres and others send', () => {
    for (const first of ['n,,n=,r=abc', 'n,,n=*,r=rOprNGfwEbeRWgbNEkqO', 'y,,n=user,r=x+/y=']) {
      const check = new ScramCheck();
      expect(check.initial(initial(first))).toBeUndefined();
      const clientNonce = /r=([^,]+)/.exec(first)?.[1];
      check.serverFirst(`r=${clientNonce}SERVER,s=c2FsdA==,i=4096`);
      const binding = Buffer.from(first.slice(0, 3)).toString('base64');
      expect(check.final(Buffer.from(`c=${binding},r=${clientNonce}SERVER,p=${proof}`))).toBeUndefined();
    }
  });

  it.each([
    [Buffer.alloc(0), '08P01 invalid string in message'],
    [Buffer.from('SCRAM-SHA-1\0\0\0\0\0'), '08P01 client selected an invalid SASL authentication mechanism'],
    [Buffer.from('SCRAM-SHA-256\0'), '08P01 insufficient data left in message'],
    [initial('n,,n=,r=x', -1), '08P01 insufficient data left in message'],
    [initial('n,,n=,r=x', 50), '08P01 insufficient data left in message'],
    [initial('n,,n=,r=x', 3), '08P01 invalid message format'],
    [initial('abc'), '08P01 malformed SCRAM message: Unexpected channel-binding flag "a".'],
    [initial('p=tls-server-end-point,,n=,r=x'), '08P01 malformed SCRAM message: The client selected'],
    [initial('n,,n='), '08P01 malformed SCRAM message: Expected attribute "r".'],
    [initial('n,a=someone,n=,r=x'), '08P01 client uses authorization identity, but it is not supported'],
    [initial('n,,m=ext,n=,r=x'), '08P01 client requires an unsupported SCRAM extension'],
    [initial('n,,n=,r=a b'), '08P01 malformed SCRAM message: non-printable characters in SCRAM nonce'],
    [Buffer.concat([initial('n,,n=,r=x'.slice(0, 8)), Buffer.from([0xff])]), '08P01 invalid message format'],
  ])('refuses a bad client-first message %#', (body, expected) => {
    expect(problem(new ScramCheck().initial(body))).toContain(expected);
  });

  it('refuses a bad client-final message', () => {
    const fresh = () => {
      const check = new ScramCheck();
      check.initial(initial('n,,n=,r=abc'));
      check.serverFirst('r=abcSERVER,s=c2FsdA==,i=4096');
      return check;
    };
    const final = (text: string | Buffer) => problem(fresh().final(Buffer.from(text)));
    expect(final('')).toBe('08P01 malformed SCRAM message: Expected attribute "c".');
    expect(final(Buffer.from([0xff, 0xfe]))).toBe(
      '08P01 malformed SCRAM message: The message is not valid UTF-8.',
    );
    expect(final(`c=eSws,r=abcSERVER,p=${proof}`)).toBe('08P01 SCRAM channel binding check failed');
    expect(final(`c=biws,r=zzz,p=${proof}`)).toBe('08P01 invalid SCRAM response: Nonce does not match.');
    expect(final('c=biws,r=abcSERVER')).toBe('08P01 malformed SCRAM message: Expected attribute "p".');
    expect(final('c=biws,r=abcSERVER,p=AAAA')).toBe(
      '08P01 malformed SCRAM message: Malformed proof in client-final-message.',
    );
  });
});
