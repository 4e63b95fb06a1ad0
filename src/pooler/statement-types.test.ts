import { describe, expect, it } from 'vitest';
import { cstr, int16, int32, tagged } from '../../test/helpers/messages.js';
import { changedResults, DescribedStatements, type StatementTypes } from './statement-types.js';
import { StatementNames } from './statements.js';

const parameterDescription = (...oids: number[]) => tagged('t', int16(oids.length), ...oids.map(int32));
/** RowDescription with one column per [oid, typmod]. */
const rowDescription = (...columns: [number, number][]) =>
  tagged(
    'T',
    int16(columns.length),
    ...columns.flatMap(([oid, mod], k) => [
      cstr(`c${k}`),
      int32(0),
      int16(0),
      int32(oid),
      int16(4),
      int32(mod),
      int16(0),
    ]),
  );
const noData = tagged('n');
const ready = tagged('Z', 'I');
const error = tagged('E', cstr('SERROR'), cstr('C42P01'), cstr('Mmissing'), Buffer.from([0]));
const parseBody = (sql: string, ...types: number[]) =>
  Buffer.concat([cstr(sql), int16(types.length), ...types.map(int32)]);

describe('DescribedStatements', () => {
  const learnt = (scanner: DescribedStatements, ...parts: Buffer[]) => {
    const out: [string, StatementTypes][] = [];
    for (const part of parts) scanner.scan(part, (name, types) => out.push([name, types]));
    return out;
  };

  it('matches each ParameterDescription and the description after it to the next Describe', () => {
    const scanner = new DescribedStatements();
    scanner.describing('a', undefined);
    scanner.describing('', undefined);
    scanner.describing('b', undefined);
    const portal = rowDescription([25, -1]); // a portal's Describe: no ParameterDescription before it
    const out = learnt(
      scanner,
      Buffer.concat([parameterDescription(23), rowDescription([20, -1]), portal]),
      Buffer.concat([parameterDescription(), noData]), // the unnamed statement: not kept
      Buffer.concat([parameterDescription(25, 23), noData, ready]),
    );
    expect(out).toEqual([
      ['a', { params: [23], results: [{ oid: 20, mod: -1 }] }],
      ['b', { params: [25, 23], results: [] }],
    ]);
  });

  it('drops the Describes an error skipped, at the ReadyForQuery', () => {
    const scanner = new DescribedStatements();
    scanner.describing('a', undefined);
    expect(learnt(scanner, Buffer.concat([error, ready]))).toEqual([]);
    scanner.describing('b', undefined);
    expect(learnt(scanner, Buffer.concat([parameterDescription(23), noData]))).toEqual([
      ['b', { params: [23], results: [] }],
    ]);
  });
});

describe('StatementNames: learned types', () => {
  it('pins learned parameter types when it prepares a statement again', () => {
    const names = new StatementNames(1, 1);
    names.define('s', parseBody('select $1, $2', 23));
    names.learn('s', { params: [23, 25], results: [] }, names.definition('s'));
    names.define('other'); // the cap of 1 closes s
    names.use('s');
    const { parses } = names.takeReprepares();
    expect(parses[0]?.subarray(-10)).toEqual(Buffer.concat([int16(2), int32(23), int32(25)]));
  });

  it('keeps types only for the definition that was described', () => {
    const names = new StatementNames(1, 1);
    names.define('s', parseBody('select 1'));
    const described = names.definition('s');
    names.close('s');
    names.define('s', parseBody('select $1'));
    names.learn('s', { params: [23], results: [] }, described); // answered for the old text
    names.define('other');
    names.use('s');
    const { parses, checks } = names.takeReprepares();
    expect(parses[0]?.subarray(-3)).toEqual(Buffer.from([0, 0, 0])); // as the client wrote it
    expect(checks).toEqual([]);
  });
});

describe('changedResults', () => {
  it('names the statements whose description differs, in order', () => {
    const checks: [string, { oid: number; mod: number }[]][] = [
      ['x', [{ oid: 23, mod: -1 }]],
      ['y', [{ oid: 1043, mod: 14 }]],
      ['z', []],
    ];
    const response = Buffer.concat([
      parameterDescription(),
      rowDescription([23, -1]),
      parameterDescription(),
      rowDescription([1043, 24]),
      parameterDescription(),
      noData,
    ]);
    expect(changedResults(response, checks)).toEqual(['y']);
  });
});
