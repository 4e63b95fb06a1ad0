import { errors, type GatewayError } from '../errors.js';

/**
 * Checks the client's SCRAM-SHA-256 messages before pg-gateway reads them, as Postgres checks
 * them (auth-scram.c): pg-gateway takes some malformed messages, and others make it print a stack
 * trace with console.error and drop the connection without a word. A message that fails here gets
 * Postgres's `FATAL 08P01 malformed SCRAM message` (or `invalid SCRAM response`) instead.
 * Pure: the caller feeds the password messages' bodies and the server's first message.
 */

const MECHANISM = 'SCRAM-SHA-256';
/** printable = %x21-2B / %x2D-7E (RFC 5802): ASCII without controls, space and comma. */
const PRINTABLE = /^[\x21-\x2b\x2d-\x7e]+$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export class ScramCheck {
  private gs2Header: string | undefined;
  private serverNonce: string | undefined;

  /** SASLInitialResponse: mechanism, Int32 length (-1 for none), client-first-message. */
  initial(body: Buffer): GatewayError | undefined {
    const end = body.indexOf(0);
    if (end < 0) return errors.protocolViolation('invalid string in message');
    if (body.toString('latin1', 0, end) !== MECHANISM) {
      return errors.protocolViolation('client selected an invalid SASL authentication mechanism');
    }
    if (body.length < end + 5) return errors.protocolViolation('insufficient data left in message');
    const length = body.readInt32BE(end + 1);
    const rest = body.length - end - 5;
    if (length === -1 || length > rest) return errors.protocolViolation('insufficient data left in message');
    if (length < rest) return errors.protocolViolation('invalid message format');
    return this.clientFirst(body.subarray(end + 5));
  }

  private clientFirst(data: Buffer): GatewayError | undefined {
    const text = utf8(data);
    if (text === undefined) return errors.malformedScram('The message is not valid UTF-8.');
    const flag = text[0];
    if (flag === 'p') {
      return errors.malformedScram(
        'The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data.',
      );
    }
    if ((flag !== 'n' && flag !== 'y') || text[1] !== ',') {
      return errors.malformedScram(`Unexpected channel-binding flag "${flag ?? ''}".`);
    }
    if (text[2] === 'a')
      return errors.protocolViolation('client uses authorization identity, but it is not supported');
    if (text[2] !== ',')
      return errors.malformedScram(`Comma expected, but found character "${text[2] ?? ''}".`);
    this.gs2Header = text.slice(0, 3);
    const attrs = text.slice(3).split(',');
    if (attrs[0]?.startsWith('m='))
      return errors.protocolViolation('client requires an unsupported SCRAM extension');
    if (!attrs[0]?.startsWith('n=')) return errors.malformedScram('Expected attribute "n".');
    if (!attrs[1]?.startsWith('r=')) return errors.malformedScram('Expected attribute "r".');
    const nonce = attrs[1].slice(2);
    if (!PRINTABLE.test(nonce)) return errors.malformedScram('non-printable characters in SCRAM nonce');
    for (const extra of attrs.slice(2)) {
      if (!/^[A-Za-z]=/.test(extra)) return errors.malformedScram('Attribute expected.');
    }
    return undefined;
  }

  /** The data of the server's AuthenticationSASLContinue (server-first-message). */
  serverFirst(data: string): void {
    const nonce = /(?:^|,)r=([^,]*)/.exec(data)?.[1];
    if (nonce !== undefined) this.serverNonce = nonce;
  }

  /** SASLResponse: the client-final-message, `c=...,r=...[,ext],p=...`. */
  final(body: Buffer): GatewayError | undefined {
    const text = utf8(body);
    if (text === undefined) return errors.malformedScram('The message is not valid UTF-8.');
    const attrs = text.split(',');
    const binding = attrs[0];
    if (!binding?.startsWith('c=')) return errors.malformedScram('Expected attribute "c".');
    if (Buffer.from(binding.slice(2), 'base64').toString('latin1') !== this.gs2Header) {
      return errors.protocolViolation('SCRAM channel binding check failed');
    }
    if (!attrs[1]?.startsWith('r=')) return errors.malformedScram('Expected attribute "r".');
    if (this.serverNonce === undefined || attrs[1].slice(2) !== this.serverNonce) {
      return errors.invalidScramResponse('Nonce does not match.');
    }
    const proof = attrs[attrs.length - 1];
    if (attrs.length < 3 || !proof?.startsWith('p=')) return errors.malformedScram('Expected attribute "p".');
    const encoded = proof.slice(2);
    if (!BASE64.test(encoded) || Buffer.from(encoded, 'base64').length !== 32) {
      return errors.malformedScram('Malformed proof in client-final-message.');
    }
    for (const extra of attrs.slice(2, -1)) {
      if (!/^[A-Za-z]=/.test(extra)) return errors.malformedScram('Attribute expected.');
    }
    return undefined;
  }
}

function utf8(data: Buffer): string | undefined {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(data);
  } catch {
    return undefined;
  }
}
