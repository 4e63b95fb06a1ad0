import { describe, expect, it } from 'vitest';
import { COMMAND_HELP, COMMANDS, type Command, USAGE } from './usage.js';

describe('CLI help', () => {
  const names = Object.keys(COMMANDS) as Command[];

  it.each(names)('%s --help shows its usage line and every option it accepts', (name) => {
    const help = COMMAND_HELP[name];
    const positionals = COMMANDS[name].args.map((a: string) =>
      a.endsWith('?') ? `[${a.slice(0, -1)}]` : `<${a}>`,
    );
    expect(help.startsWith(`usage: pglite-gateway ${[name, ...positionals].join(' ')}`)).toBe(true);
    expect(help).toContain('-h, --help');
    for (const option of Object.keys(COMMANDS[name].options)) {
      expect(help, `${name} --${option}`).toMatch(new RegExp(`^  --${option}\\b`, 'm'));
    }
  });

  it('lists every command in the general usage', () => {
    for (const name of names) expect(USAGE).toMatch(new RegExp(`^  ${name}\\b`, 'm'));
  });
});
