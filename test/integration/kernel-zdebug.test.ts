import { Cleanup } from '../lib/cleanup.js';
import { Lab } from './helpers/lab.js';
const cleanup = new Cleanup();
afterAll(() => cleanup.run());
const dump = (lab: Lab) => lab.runner.log.map((c) => `[${c.exitCode}] ${c.cmd} ${c.args.join(' ')} <<${c.input ?? ''}>>`).join('\n');
test('dbg', async () => {
  const lab = await Lab.create(cleanup);
  const a = await lab.network({});
  const c1 = await lab.attach(a);
  console.log(dump(lab), JSON.stringify(lab.db.state.endpoints), c1.id);
  const n = lab.runner.log.length;
  await lab.driver.deleteEndpoint(a.id, c1.id);
  console.log(lab.runner.log.length - n, dump(lab));
}, 30000);
