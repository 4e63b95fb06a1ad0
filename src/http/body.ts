import type { z } from 'zod';
import { InvalidRequestError } from '../admin/service.js';

/** Parses a JSON request body against `schema`; an empty body is `{}`. Problems are 400s. */
export async function parseBody<T>(req: { text(): Promise<string> }, schema: z.ZodType<T>): Promise<T> {
  const text = await req.text();
  let raw: unknown = {};
  if (text.trim() !== '') {
    try {
      raw = JSON.parse(text);
    } catch {
      throw new InvalidRequestError('request body is not valid JSON');
    }
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ` : '') + i.message);
    throw new InvalidRequestError(issues.join('; '));
  }
  return parsed.data;
}
