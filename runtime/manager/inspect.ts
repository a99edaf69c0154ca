// socket.io `/inspect` (admins only): the live actor graph as a `graph` snapshot on connect, then
// `delta` messages ({upserts, removes}) as actors change, batched by the graph.
import type { Namespace } from 'socket.io';
import type { ActorGraph } from './actor-graph.ts';
import { socketAuth } from './http/auth.ts';
import type { Keypairs } from './keypairs.ts';

export function attachInspect(nsp: Namespace, deps: { graph: ActorGraph; keypairs: Keypairs }): void {
  nsp.use(socketAuth(deps.keypairs, { adminOnly: true }));
  nsp.on('connection', (socket) => {
    socket.emit('graph', { managerId: deps.graph.managerId, nodes: deps.graph.list() });
    const stop = deps.graph.subscribe((d) => socket.emit('delta', d));
    socket.on('disconnect', stop);
  });
}
