/**
 * The sidebar's "This machine" section: every accel-widgets service running here that the
 * user can see, from all their workspaces (a workshop room's forgotten services included),
 * with memory, CPU, requests and idle time, and a button that stops the idle ones after a
 * confirmation (the `stopIdle` command in `sidebar.ts`).
 *
 * It loads on its own, beside the workspace's lists: reading every server's `/metrics` and
 * the containers' stats can take a second or two, and must not hold up the Services list.
 */
import { stopIcon } from '@jupyterlab/ui-components';

import { ApiError, IRoom, IRoomService, listRoom } from './api';
import { CommandIDs } from './commands';
import { h, wrapAtSlashes } from './dom';
import { Execute } from './rows';

export const ROOM_EMPTY_TEXT = 'No accel-widgets service runs on this machine.';

/** `75 s`, `12 min`, `3 h`: idle times as a person reads them. */
export function duration(seconds: number): string {
  if (seconds < 120) {
    return `${Math.round(seconds)} s`;
  }
  if (seconds < 7200) {
    return `${Math.round(seconds / 60)} min`;
  }
  return `${Math.round(seconds / 3600)} h`;
}

/** `149 MB`, `1.2 GB` */
export function megabytes(mb: number): string {
  return mb >= 1024 ? `${(mb / 1024).toFixed(1)} GB` : `${Math.round(mb)} MB`;
}

/** The services idle at least `seconds` that a stop can reach (local processes). */
export function idleServices(
  services: IRoomService[],
  seconds: number
): IRoomService[] {
  return services.filter(
    service =>
      service.target === 'local' &&
      service.pid !== null &&
      service.idle_seconds !== null &&
      service.idle_seconds >= seconds
  );
}

function roomRow(service: IRoomService): HTMLLIElement {
  const figures = [
    megabytes(service.rss_mb),
    service.cpu_percent === null ? null : `${service.cpu_percent}% CPU`,
    service.requests === null ? null : `${service.requests} requests`,
    service.idle_seconds === null
      ? null
      : `idle ${duration(service.idle_seconds)}`
  ].filter(Boolean);
  const where = service.mine
    ? 'this workspace'
    : service.target === 'container'
      ? `container ${service.address}`
      : service.workspace;
  return h(
    'li',
    {
      class: `accel-room-row${service.mine ? ' accel-room-mine' : ''}`,
      dataset: { name: service.name, workspace: service.workspace }
    },
    h(
      'div',
      { class: 'accel-sidebar-row-head' },
      h('span', { class: 'accel-sidebar-row-name' }, service.name),
      h('span', { class: 'accel-sidebar-tag' }, service.target)
    ),
    h(
      'div',
      { class: 'accel-sidebar-row-detail accel-room-figures' },
      figures.join(' · ')
    ),
    h(
      'div',
      { class: 'accel-sidebar-row-detail accel-room-where' },
      ...wrapAtSlashes(where)
    )
  );
}

export class RoomSection {
  constructor(execute: Execute) {
    this._stop = h(
      'button',
      {
        class: 'accel-sidebar-action accel-room-stop-idle',
        type: 'button',
        title:
          'Stop the services on this machine that served no request for a while'
      },
      stopIcon.element({ tag: 'span', className: 'accel-sidebar-action-icon' }),
      h('span', { class: 'accel-sidebar-action-label' }, 'Stop idle…')
    );
    this._stop.addEventListener('click', () =>
      execute(CommandIDs.stopIdle, {})
    );
    this.node = h(
      'section',
      { class: 'accel-sidebar-section accel-sidebar-room' },
      h('h3', { class: 'accel-sidebar-heading' }, 'This machine'),
      this._summary,
      this._list,
      this._stop
    );
    this._summary.textContent = 'Loading…';
  }

  readonly node: HTMLElement;

  /** The room as last loaded (services of every workspace, and the idle time-out). */
  get room(): IRoom {
    return this._room;
  }

  /** Reload now; one load at a time (a load asked for meanwhile reuses the running one). */
  refresh(): Promise<void> {
    if (!this._running) {
      this._running = this._load().finally(() => {
        this._running = null;
      });
    }
    return this._running;
  }

  private async _load(): Promise<void> {
    try {
      this._room = await listRoom();
      this._error = null;
    } catch (error) {
      this._error =
        error instanceof ApiError ? error : new ApiError(String(error), 0);
    }
    this._render();
  }

  private _render(): void {
    if (this._error) {
      this._summary.textContent = `Cannot list this machine's services: ${this._error.message}`;
      this._summary.classList.add('accel-room-error');
      return;
    }
    this._summary.classList.remove('accel-room-error');
    const services = this._room.services;
    const total = services.reduce((sum, service) => sum + service.rss_mb, 0);
    const others = services.filter(service => !service.mine).length;
    this._summary.textContent = services.length
      ? `${services.length} service${services.length > 1 ? 's use' : ' uses'} ${megabytes(total)}` +
        (others ? ` (${others} from other workspaces)` : '') +
        '.'
      : ROOM_EMPTY_TEXT;
    const key = JSON.stringify(
      services.map(s => [
        s.name,
        s.workspace,
        Math.round(s.rss_mb),
        s.requests,
        s.idle_seconds === null ? null : Math.round(s.idle_seconds / 10)
      ])
    );
    if (key !== this._key) {
      this._key = key;
      this._list.replaceChildren(...services.map(roomRow));
    }
    // Enabled while any local service runs: the dialog asks how long idle counts and
    // names the ones that would stop, the room's time-out first.
    const stoppable = idleServices(services, 0);
    const idle = idleServices(services, this._room.idle_after);
    this._stop.disabled = stoppable.length === 0;
    this._stop.title = idle.length
      ? `${idle.length} service${idle.length > 1 ? 's have' : ' has'} been idle for ${duration(this._room.idle_after)} or more`
      : `Stop services on this machine that served no request for a while`;
  }

  private readonly _summary = h('p', {
    class: 'accel-sidebar-none accel-room-summary'
  });
  private readonly _list = h('ul', {
    class: 'accel-sidebar-list accel-room-list'
  });
  private readonly _stop: HTMLButtonElement;
  private _room: IRoom = { services: [], idle_after: 600 };
  private _error: ApiError | null = null;
  private _key = '';
  private _running: Promise<void> | null = null;
}
