/**
 * The deployments sidebar: the workspace's services (live health), images and model
 * versions, listed in dependency order (a service runs an image, an image holds a model).
 *
 * The panel only shows state and turns clicks into commands (`commands.ts`); the commands
 * (registered in `sidebar.ts`) talk to the server and ask the panel to refresh. While it is
 * visible it reloads every few seconds; rows are only rebuilt when their data changed, so a
 * button does not vanish under the pointer on every refresh.
 */
import { refreshIcon } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import {
  ApiError,
  IImage,
  IModel,
  IService,
  listImages,
  listModels,
  listServices
} from './api';
import { CommandIDs } from './commands';
import { h } from './dom';
import { RoomSection } from './room';
import { Execute, imageRow, modelId, modelRow, serviceRow } from './rows';

/** How often a visible panel reloads, in milliseconds. */
export const REFRESH_INTERVAL_MS = 5000;

export const EMPTY_TEXT =
  'No services yet: open the Accelerated model walkthrough from the launcher to deploy one.';
/** Once this sidebar has listed a service: "yet" would read as if there never was one. */
export const STOPPED_TEXT =
  'No services running: the ones listed here were stopped. Deploy again from the walkthrough.';
export const NO_IMAGES_TEXT =
  "No images yet: the walkthrough's Package step builds one for the container target.";
export const ERROR_HINT = 'Is the accel-widgets server extension enabled?';
export const ERROR_COMMAND = 'jupyter server extension list';

/** What the sidebar lists; a busy note is keyed by kind and id. */
export type RowKind = 'service' | 'image' | 'model';

/** A row rebuilt only when its data (or its busy note) changed. */
interface IRow {
  key: string;
  element: HTMLLIElement;
}

export class DeploymentsPanel extends Widget {
  constructor(commands: CommandRegistry) {
    super();
    this._commands = commands;
    this.addClass('accel-sidebar');

    const refresh = h(
      'button',
      {
        class: 'accel-sidebar-refresh',
        title: 'Refresh services, images and models',
        type: 'button'
      },
      refreshIcon.element({ tag: 'span' })
    );
    refresh.addEventListener('click', () => {
      void this._commands.execute(CommandIDs.refresh);
    });

    this._errorState = h(
      'div',
      { class: 'accel-error-state', role: 'alert' },
      this._errorMessage,
      h(
        'p',
        { class: 'accel-sidebar-hint' },
        `${ERROR_HINT} `,
        h('code', {}, ERROR_COMMAND)
      )
    );
    this._empty = h('p', { class: 'accel-empty' }, EMPTY_TEXT);
    this._noImages = h('p', { class: 'accel-sidebar-none' }, NO_IMAGES_TEXT);
    this._noModels = h(
      'p',
      { class: 'accel-sidebar-none' },
      'No models yet: the walkthrough converts one.'
    );

    this._content = h(
      'div',
      { class: 'accel-sidebar-content' },
      h(
        'section',
        { class: 'accel-sidebar-section accel-sidebar-services' },
        h('h3', { class: 'accel-sidebar-heading' }, 'Services'),
        this._empty,
        this._serviceList
      ),
      h(
        'section',
        { class: 'accel-sidebar-section accel-sidebar-images' },
        h('h3', { class: 'accel-sidebar-heading' }, 'Images'),
        this._noImages,
        this._imageList
      ),
      h(
        'section',
        { class: 'accel-sidebar-section accel-sidebar-models' },
        h('h3', { class: 'accel-sidebar-heading' }, 'Models'),
        this._noModels,
        this._modelList
      ),
      this._room.node
    );

    this.node.append(
      h(
        'header',
        { class: 'accel-sidebar-header' },
        h('h2', { class: 'accel-sidebar-title' }, 'Deployments'),
        refresh
      ),
      h(
        'div',
        { class: 'accel-sidebar-body' },
        this._errorState,
        this._content
      ),
      this._footer
    );
    this._showLoading();
  }

  /** Every accel-widgets service on this machine, as last listed ("This machine"). */
  get room(): RoomSection {
    return this._room;
  }

  /** The service of that name as last listed. */
  service(name: string): IService | undefined {
    return this._services.find(service => service.name === name);
  }

  /** The model version as last listed. */
  model(name: string, version: number): IModel | undefined {
    return this._models.find(
      model => model.name === name && model.version === version
    );
  }

  /** The image version as last listed. */
  image(name: string, version: number): IImage | undefined {
    return this._images.find(
      image => image.name === name && image.version === version
    );
  }

  /** Services that use the model version (the server refuses its delete while any does). */
  usersOf(name: string, version: number): string[] {
    return this._services
      .filter(service => service.model === name && service.version === version)
      .map(service => service.name);
  }

  /**
   * Images that hold the model version, by tag (the server refuses the model's delete
   * while any is recorded, as it does while a service uses it).
   */
  imagesOf(name: string, version: number): string[] {
    const id = modelId(name, version);
    return this._images
      .filter(image => image.model.split(' ')[0] === id)
      .map(image => image.tag || modelId(image.name, image.version));
  }

  /** Show a note such as "stopping…" on a row and disable its buttons (null clears it). */
  setBusy(kind: RowKind, id: string, note: string | null): void {
    const key = `${kind}/${id}`;
    if (note === null) {
      this._busy.delete(key);
    } else {
      this._busy.set(key, note);
    }
    this._render();
  }

  /**
   * Reload services, images and models now. Calls made while a load runs share one follow-up load,
   * so a refresh asked for after a change never returns data read before it.
   */
  refresh(): Promise<void> {
    if (this._queued) {
      return this._queued;
    }
    if (this._running) {
      this._queued = this._running.then(() => {
        this._queued = null;
        return this._start();
      });
      return this._queued;
    }
    return this._start();
  }

  dispose(): void {
    this._stopTimer();
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.refresh();
    this._startTimer();
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._stopTimer();
  }

  private _start(): Promise<void> {
    this._running = this._load().finally(() => {
      this._running = null;
    });
    return this._running;
  }

  private async _load(): Promise<void> {
    // This machine's services load beside the workspace's, never holding them up.
    void this._room.refresh();
    try {
      const [services, images, models] = await Promise.all([
        listServices(),
        listImages(),
        listModels()
      ]);
      this._services = services;
      this._images = images;
      this._models = models;
      this._error = null;
      this._loaded = true;
      this._updated = new Date();
    } catch (error) {
      this._error =
        error instanceof ApiError ? error : new ApiError(String(error), 0);
    }
    this._render();
  }

  private _startTimer(): void {
    this._stopTimer();
    this._timer = window.setTimeout(async () => {
      this._timer = null;
      if (!document.hidden) {
        await this.refresh();
      }
      if (this.isVisible && !this.isDisposed) {
        this._startTimer();
      }
    }, REFRESH_INTERVAL_MS);
  }

  private _stopTimer(): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
  }

  private _showLoading(): void {
    this._errorState.hidden = true;
    this._empty.hidden = true;
    this._noImages.hidden = true;
    this._noModels.hidden = true;
    this._footer.textContent = 'Loading…';
  }

  private _render(): void {
    if (this._error) {
      this._errorMessage.textContent = this._error.message;
      this._errorState.hidden = false;
      this._content.hidden = true;
      this._footer.textContent = this._updated
        ? `Last updated ${this._updated.toLocaleTimeString()}`
        : '';
      return;
    }
    if (!this._loaded) {
      return;
    }
    this._errorState.hidden = true;
    this._content.hidden = false;
    if (this._services.length > 0) {
      this._hadServices = true;
    }
    this._empty.hidden = this._services.length > 0;
    this._empty.textContent = this._hadServices ? STOPPED_TEXT : EMPTY_TEXT;
    this._noImages.hidden = this._images.length > 0;
    this._noModels.hidden = this._models.length > 0;
    this._sync(
      this._serviceList,
      this._serviceRows,
      'service',
      this._services.map(service => [service.name, service] as const),
      (service, busy) => serviceRow(service, busy, this._execute)
    );
    this._sync(
      this._imageList,
      this._imageRows,
      'image',
      this._images.map(
        image => [modelId(image.name, image.version), image] as const
      ),
      (image, busy) => imageRow(image, busy, this._execute)
    );
    this._sync(
      this._modelList,
      this._modelRows,
      'model',
      this._models.map(
        model =>
          [
            modelId(model.name, model.version),
            {
              model,
              users: [
                ...this.usersOf(model.name, model.version),
                ...this.imagesOf(model.name, model.version).map(
                  tag => `image ${tag}`
                )
              ]
            }
          ] as const
      ),
      ({ model, users }, busy) => modelRow(model, users, busy, this._execute)
    );
    this._footer.textContent = this._updated
      ? `Updated ${this._updated.toLocaleTimeString()}`
      : '';
  }

  /** Make `list` show `items` in order, rebuilding only rows whose data changed. */
  private _sync<T>(
    list: HTMLUListElement,
    rows: Map<string, IRow>,
    kind: RowKind,
    items: ReadonlyArray<readonly [string, T]>,
    build: (item: T, busy: string | null) => HTMLLIElement
  ): void {
    const seen = new Set<string>();
    let previous: Element | null = null;
    for (const [id, item] of items) {
      seen.add(id);
      const busy = this._busy.get(`${kind}/${id}`) ?? null;
      const key = JSON.stringify([item, busy]);
      let row = rows.get(id);
      if (!row || row.key !== key) {
        const element = build(item, busy);
        if (row) {
          row.element.replaceWith(element);
        }
        row = { key, element };
        rows.set(id, row);
      }
      const expected: Element | null = previous
        ? previous.nextElementSibling
        : list.firstElementChild;
      if (expected !== row.element) {
        list.insertBefore(row.element, expected);
      }
      previous = row.element;
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.element.remove();
        rows.delete(id);
      }
    }
  }

  private readonly _commands: CommandRegistry;
  private readonly _execute: Execute = (command, args) =>
    void this._commands.execute(command, args);
  private readonly _room = new RoomSection(this._execute);
  private readonly _errorMessage = h('p', {
    class: 'accel-sidebar-error-message'
  });
  private readonly _errorState: HTMLDivElement;
  private readonly _empty: HTMLParagraphElement;
  private readonly _noImages: HTMLParagraphElement;
  private readonly _noModels: HTMLParagraphElement;
  private readonly _content: HTMLDivElement;
  private readonly _footer = h('footer', { class: 'accel-sidebar-footer' });
  private readonly _serviceList = h('ul', {
    class: 'accel-sidebar-list accel-service-list'
  });
  private readonly _imageList = h('ul', {
    class: 'accel-sidebar-list accel-image-list'
  });
  private readonly _modelList = h('ul', {
    class: 'accel-sidebar-list accel-model-list'
  });
  private readonly _serviceRows = new Map<string, IRow>();
  private readonly _imageRows = new Map<string, IRow>();
  private readonly _modelRows = new Map<string, IRow>();
  private readonly _busy = new Map<string, string>();
  private _services: IService[] = [];
  private _hadServices = false;
  private _images: IImage[] = [];
  private _models: IModel[] = [];
  private _error: ApiError | null = null;
  private _loaded = false;
  private _updated: Date | null = null;
  private _running: Promise<void> | null = null;
  private _queued: Promise<void> | null = null;
  private _timer: number | null = null;
}
