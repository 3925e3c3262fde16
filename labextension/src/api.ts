/**
 * The REST API of the accel-widgets server extension (`accel_widgets/server_extension.py`).
 *
 * Every call goes through `ServerConnection.makeRequest`, which adds Jupyter's token and
 * XSRF header, so the API is as protected as the contents API.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** Where the server extension mounts its routes, under the server's base URL. */
export const API_PATH = 'accel-widgets/api';

/** A service's live state, as the engine checks it on every listing. */
export type Health = 'running' | 'starting' | 'unhealthy' | 'dead';

export interface IService {
  name: string;
  /** The target's registry name (`local`, `container`, ...). */
  target: string;
  /** The target's title ("This machine", "Container (Docker)"); older servers omit it. */
  target_title?: string;
  /** The image tag a container service runs; null for a service without an image. */
  image?: string | null;
  address: string;
  state: string;
  health: Health;
  auth: boolean;
  pid: number | null;
  model: string | null;
  version: number | null;
  precision: string | null;
  ready_seconds: number | null;
}

/** What the artifact's checks found (engine/verdicts.py): mark 'ok' (✓), 'warn' (⚠) or ''. */
export interface ICheck {
  mark: string;
  text: string;
}

export interface IArtifact {
  precision: string;
  size_mb: number;
  check: ICheck;
  /** Top-1 accuracy on labelled photos, and how many, when it was measured. */
  top1: number | null;
  photos: number | null;
}

export interface IModel {
  name: string;
  version: number;
  kind: string;
  description: string;
  artifacts: IArtifact[];
}

/** A packaged container image recorded in the workspace. */
export interface IImage {
  name: string;
  version: number;
  /** The engine's tag (`accel-widgets/squeezenet:1`); null until a build finished. */
  tag: string | null;
  /** The model version and precision it holds, e.g. `squeezenet:1 fp16`. */
  model: string;
  size_mb: number;
  base: string | null;
  /** Whether the Docker engine still has it; null when no engine answered. */
  present: boolean | null;
  /** Registry references it was pushed to. */
  pushed: string[];
  /** Services running it: they must go before the image. */
  used_by: string[];
}

/** A notebook the server wrote (or found already there: `created` is false). */
export interface INotebookPath {
  path: string;
  created: boolean;
}

/**
 * A failed call: the server's own `message` when it sent one, and the HTTP status
 * (0 when the server could not be reached at all).
 */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

async function request<T>(
  path: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, API_PATH, path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ApiError(`the Jupyter server did not answer (${reason})`, 0);
  }
  const text = await response.text();
  let body: unknown = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (!response.ok) {
    let message =
      body !== null && typeof body === 'object' && 'message' in body
        ? String((body as { message: unknown }).message)
        : `${API_PATH}/${path} answered ${response.status} ${response.statusText}`.trim();
    if (response.status >= 500) {
      message += ` (HTTP ${response.status}: the Jupyter server's log has the details)`;
    }
    throw new ApiError(message, response.status);
  }
  return body as T;
}

function segment(value: string | number): string {
  return encodeURIComponent(String(value));
}

function postJSON(body: unknown): RequestInit {
  return { method: 'POST', body: JSON.stringify(body) };
}

export async function listServices(): Promise<IService[]> {
  const reply = await request<{ services: IService[] }>('services');
  return reply.services;
}

export async function listModels(): Promise<IModel[]> {
  const reply = await request<{ models: IModel[] }>('models');
  return reply.models;
}

export async function listImages(): Promise<IImage[]> {
  const reply = await request<{ images: IImage[] }>('images');
  return reply.images;
}

/** Stop a service and forget it (the server waits until the process is gone). */
export async function deleteService(name: string): Promise<void> {
  await request(`services/${segment(name)}`, { method: 'DELETE' });
}

export async function serviceKey(name: string): Promise<string> {
  const reply = await request<{ key: string }>(`services/${segment(name)}/key`);
  return reply.key;
}

/** Write (or find) `score-<name>.ipynb` in `folder`, relative to the server root. */
export function scoringNotebook(
  name: string,
  folder: string
): Promise<INotebookPath> {
  return request<INotebookPath>(
    `services/${segment(name)}/notebook`,
    postJSON({ path: folder })
  );
}

/** Delete a model version; refused (409) while a service uses it. */
export async function deleteModel(
  name: string,
  version: number
): Promise<void> {
  await request(`models/${segment(name)}/${segment(version)}`, {
    method: 'DELETE'
  });
}

/**
 * Remove an image version from the Docker engine and the workspace; refused (409) while a
 * service runs it. Copies pushed to registries stay there.
 */
export async function deleteImage(
  name: string,
  version: number
): Promise<void> {
  await request(`images/${segment(name)}/${segment(version)}`, {
    method: 'DELETE'
  });
}

/** Copy the walkthrough into `folder` unless a copy is there already. */
export function copyWalkthrough(folder: string): Promise<INotebookPath> {
  return request<INotebookPath>('walkthrough', postJSON({ path: folder }));
}

/** One accel-widgets service running on this machine, from any workspace the user can see. */
export interface IRoomService {
  /** `local` (a server process) or `container`. */
  target: string;
  name: string;
  /** The workspace folder (local) or its id (container). */
  workspace: string;
  user: string;
  pid: number | null;
  rss_mb: number;
  /** Average CPU over the service's life, percent of one core; null for containers. */
  cpu_percent: number | null;
  requests: number | null;
  idle_seconds: number | null;
  address: string;
  /** Whether it is this workspace's own (the Services section lists those). */
  mine: boolean;
}

export interface IRoom {
  services: IRoomService[];
  /** Idle seconds after which "Stop idle" stops a service ($ACCEL_WIDGETS_IDLE_TIMEOUT). */
  idle_after: number;
}

/** Every accel-widgets service on this machine, across the user's workspaces. */
export function listRoom(): Promise<IRoom> {
  return request<IRoom>('room');
}

/** Stop the local services idle at least `seconds`; the names of those stopped. */
export async function stopIdle(seconds: number): Promise<string[]> {
  const reply = await request<{ stopped: string[] }>(
    'room/stop-idle',
    postJSON({ seconds })
  );
  return reply.stopped;
}
