/**
 * The "Deployments" sidebar plugin: the panel in the left area and the commands behind its
 * buttons, the command palette and the right-click menu of its rows.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Clipboard,
  Dialog,
  ICommandPalette,
  Notification,
  showDialog,
  showErrorMessage
} from '@jupyterlab/apputils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { refreshIcon } from '@jupyterlab/ui-components';
import { ReadonlyPartialJSONObject } from '@lumino/coreutils';
import { Widget } from '@lumino/widgets';

import {
  ApiError,
  deleteImage,
  deleteModel,
  deleteService,
  scoringNotebook,
  serviceKey,
  stopIdle
} from './api';
import { CommandIDs, PALETTE_CATEGORY } from './commands';
import { currentFolder } from './files';
import { deploymentsIcon } from './icons';
import { DeploymentsPanel } from './panel';
import { duration, idleServices } from './room';

const PANEL_ID = 'accel-widgets-deployments';

/** Copy to the clipboard and say so briefly. */
function copy(text: string, what: string): void {
  Clipboard.copyToSystem(text);
  Notification.success(`Copied ${what}`, { autoClose: 3000 });
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/** "a, b and c" */
function listing(items: string[]): string {
  return items.length > 1
    ? `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`
    : (items[0] ?? '');
}

export const sidebarPlugin: JupyterFrontEndPlugin<void> = {
  id: 'accel-widgets:deployments',
  description:
    'A left sidebar listing deployed model services, their images and model versions.',
  autoStart: true,
  requires: [IDocumentManager],
  optional: [IDefaultFileBrowser, ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    docManager: IDocumentManager,
    browser: IDefaultFileBrowser | null,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const { commands, shell } = app;
    const panel = new DeploymentsPanel(commands);
    panel.id = PANEL_ID;
    panel.title.icon = deploymentsIcon;
    panel.title.caption = 'Deployments';
    shell.add(panel, 'left', { rank: 650 });
    restorer?.add(panel, PANEL_ID);

    /** The row a command is about: its args, or the row right-clicked. */
    const target = (args: ReadonlyPartialJSONObject, selector: string) => {
      const row = app.contextMenuHitTest(node => node.matches(selector));
      return {
        name:
          typeof args.name === 'string' ? args.name : (row?.dataset.name ?? ''),
        version: Number(args.version ?? row?.dataset.version ?? NaN)
      };
    };
    const serviceName = (args: ReadonlyPartialJSONObject) =>
      target(args, '.accel-service-row').name;

    commands.addCommand(CommandIDs.showDeployments, {
      label: 'Show deployments',
      caption: 'Open the sidebar of deployed services and models',
      execute: () => shell.activateById(PANEL_ID)
    });

    commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh deployments',
      icon: refreshIcon,
      execute: () => panel.refresh()
    });

    commands.addCommand(CommandIDs.copyAddress, {
      label: 'Copy address',
      caption: 'Copy the host:port clients call',
      execute: args => {
        const service = panel.service(serviceName(args));
        if (service) {
          copy(
            service.address,
            `the address of ${service.name}: ${service.address}`
          );
        }
      }
    });

    commands.addCommand(CommandIDs.copyKey, {
      label: 'Copy API key',
      caption: 'Copy the key clients send in the authorization header',
      isEnabled: args => panel.service(serviceName(args))?.auth ?? true,
      execute: async args => {
        const name = serviceName(args);
        try {
          copy(await serviceKey(name), `the API key of ${name}`);
        } catch (error) {
          await showErrorMessage(`No key for ${name}`, asError(error));
        }
      }
    });

    commands.addCommand(CommandIDs.openScoringNotebook, {
      label: 'Open scoring notebook',
      caption:
        'Write a notebook that scores pictures with this service and open it',
      execute: async args => {
        const name = serviceName(args);
        try {
          const { path } = await scoringNotebook(name, currentFolder(browser));
          return docManager.openOrReveal(path);
        } catch (error) {
          await showErrorMessage(
            `Cannot write a notebook for ${name}`,
            asError(error)
          );
          return undefined;
        }
      }
    });

    commands.addCommand(CommandIDs.stopService, {
      label: 'Stop and delete service',
      caption: 'Stop the service process and remove it from the workspace',
      execute: async args => {
        const name = serviceName(args);
        const service = panel.service(name);
        const stays = service?.image
          ? `The image ${service.image} and the model stay.`
          : 'The model stays.';
        const result = await showDialog({
          title: `Stop ${name}?`,
          body:
            `The service stops and leaves the workspace; clients calling ` +
            `${service?.address ?? 'it'} will get errors. ${stays}`,
          buttons: [
            Dialog.cancelButton(),
            Dialog.warnButton({ label: 'Stop and delete' })
          ]
        });
        if (!result.button.accept) {
          return;
        }
        panel.setBusy('service', name, 'stopping…');
        let failure: unknown = null;
        try {
          await deleteService(name);
        } catch (error) {
          failure = error;
        }
        // The list shows the outcome before any error dialog waits for the user.
        panel.setBusy('service', name, null);
        await panel.refresh();
        if (failure) {
          await showErrorMessage(`Cannot stop ${name}`, asError(failure));
        } else {
          Notification.success(`Stopped ${name}`, { autoClose: 3000 });
        }
      }
    });

    commands.addCommand(CommandIDs.deleteModel, {
      label: 'Delete model version',
      caption: 'Delete the model version and its converted files',
      execute: async args => {
        const { name, version } = target(args, '.accel-model-row');
        const id = `${name}:${version}`;
        const users = panel.usersOf(name, version);
        const images = panel.imagesOf(name, version);
        const needed = [
          users.length ? `served by ${listing(users)}` : '',
          images.length
            ? `packaged in the image${images.length > 1 ? 's' : ''} ${listing(images)}`
            : ''
        ].filter(Boolean);
        if (needed.length) {
          // Nothing can be deleted yet: one dialog that says why, with only a way out
          // (a red Delete here led to a second "still in use" dialog).
          await showDialog({
            title: `${id} is in use`,
            body:
              `${id} is ${needed.join(' and ')}: ` +
              `delete ${users.length + images.length > 1 ? 'them' : 'it'} first ` +
              `(services, then images).`,
            buttons: [Dialog.okButton({ label: 'Close' })]
          });
          return;
        }
        const result = await showDialog({
          title: `Delete ${id}?`,
          body: `The model version and its converted files are deleted from the workspace.`,
          buttons: [
            Dialog.cancelButton(),
            Dialog.warnButton({ label: 'Delete' })
          ]
        });
        if (!result.button.accept) {
          return;
        }
        panel.setBusy('model', id, 'deleting…');
        let failure: unknown = null;
        try {
          await deleteModel(name, version);
        } catch (error) {
          failure = error;
        }
        panel.setBusy('model', id, null);
        await panel.refresh();
        if (failure) {
          const title =
            failure instanceof ApiError && failure.status === 409
              ? `${id} is still in use`
              : `Cannot delete ${id}`;
          await showErrorMessage(title, asError(failure));
        } else {
          Notification.success(`Deleted ${id}`, { autoClose: 3000 });
        }
      }
    });

    commands.addCommand(CommandIDs.deleteImage, {
      label: 'Delete image',
      caption:
        'Remove the image from the Docker engine and the workspace (stop its services first)',
      isEnabled: args => {
        const { name, version } = target(args, '.accel-image-row');
        return (panel.image(name, version)?.used_by.length ?? 0) === 0;
      },
      execute: async args => {
        const { name, version } = target(args, '.accel-image-row');
        const id = `${name}:${version}`;
        const image = panel.image(name, version);
        const label = image?.tag || id;
        const users = image?.used_by ?? [];
        const pushed = image?.pushed.length
          ? ` Copies pushed to ${listing(image.pushed)} stay in their registries.`
          : '';
        if (users.length) {
          await showDialog({
            title: `${label} is in use`,
            body: `${label} is run by ${listing(users)}: stop ${users.length > 1 ? 'them' : 'it'} first.`,
            buttons: [Dialog.okButton({ label: 'Close' })]
          });
          return;
        }
        const result = await showDialog({
          title: `Delete ${label}?`,
          body:
            `The image is removed from the Docker engine and the workspace; ` +
            `the model ${image?.model ?? ''} stays.${pushed}`,
          buttons: [
            Dialog.cancelButton(),
            Dialog.warnButton({ label: 'Delete' })
          ]
        });
        if (!result.button.accept) {
          return;
        }
        panel.setBusy('image', id, 'deleting…');
        let failure: unknown = null;
        try {
          await deleteImage(name, version);
        } catch (error) {
          failure = error;
        }
        panel.setBusy('image', id, null);
        await panel.refresh();
        if (failure) {
          const title =
            failure instanceof ApiError && failure.status === 409
              ? `${label} is still in use`
              : `Cannot delete ${label}`;
          await showErrorMessage(title, asError(failure));
        } else {
          Notification.success(`Deleted ${label}`, { autoClose: 3000 });
        }
      }
    });

    commands.addCommand(CommandIDs.stopIdle, {
      label: 'Stop idle services on this machine',
      caption:
        'Stop the accel-widgets services of every workspace that served no request for a while',
      execute: async () => {
        await panel.room.refresh();
        const room = panel.room.room;
        const body = new IdleForm(room.idle_after, seconds =>
          idleServices(room.services, seconds).map(
            service =>
              `${service.name} (${service.mine ? 'this workspace' : service.workspace})`
          )
        );
        const result = await showDialog<number | null>({
          title: 'Stop idle services?',
          body,
          buttons: [
            Dialog.cancelButton(),
            Dialog.warnButton({ label: 'Stop idle' })
          ]
        });
        if (!result.button.accept || result.value === null) {
          return;
        }
        let stopped: string[] = [];
        try {
          stopped = await stopIdle(result.value);
        } catch (error) {
          await panel.refresh();
          await showErrorMessage(
            'Cannot stop the idle services',
            asError(error)
          );
          return;
        }
        await panel.refresh();
        await panel.room.refresh();
        Notification.success(
          stopped.length
            ? `Stopped ${listing(stopped)}: their owners start them again with a deploy`
            : `No service had been idle for ${duration(result.value)}`,
          { autoClose: 5000 }
        );
      }
    });

    const serviceCommands = [
      CommandIDs.copyAddress,
      CommandIDs.copyKey,
      CommandIDs.openScoringNotebook,
      CommandIDs.stopService
    ];
    serviceCommands.forEach((command, rank) =>
      app.contextMenu.addItem({ command, selector: '.accel-service-row', rank })
    );
    app.contextMenu.addItem({
      command: CommandIDs.deleteImage,
      selector: '.accel-image-row',
      rank: 0
    });
    app.contextMenu.addItem({
      command: CommandIDs.deleteModel,
      selector: '.accel-model-row',
      rank: 0
    });

    for (const command of [
      CommandIDs.showDeployments,
      CommandIDs.refresh,
      CommandIDs.stopIdle
    ]) {
      palette?.addItem({ command, category: PALETTE_CATEGORY });
    }
  }
};

/**
 * The body of the "Stop idle services?" dialog: how long idle counts as idle (the room's
 * time-out to start with) and, as it changes, which services that would stop.
 */
class IdleForm extends Widget implements Dialog.IBodyWidget<number | null> {
  constructor(seconds: number, which: (seconds: number) => string[]) {
    super();
    this.addClass('accel-idle-form');
    this._which = which;
    const label = document.createElement('label');
    label.textContent = 'Idle for at least ';
    this._input.type = 'number';
    this._input.min = '1';
    this._input.step = '1';
    this._input.value = String(Math.round(seconds));
    this._input.className = 'accel-idle-seconds jp-mod-styled';
    this._input.addEventListener('input', () => this._update());
    label.append(this._input, ' seconds');
    this._list.className = 'accel-idle-list';
    this.node.append(label, this._list);
    this._update();
  }

  getValue(): number | null {
    const seconds = Number(this._input.value);
    return Number.isFinite(seconds) && seconds > 0 ? seconds : null;
  }

  private _update(): void {
    const seconds = this.getValue();
    const names = seconds === null ? [] : this._which(seconds);
    this._list.textContent =
      seconds === null
        ? 'Give a number of seconds above 0.'
        : names.length
          ? `Stops ${listing(names)}. Their workspaces keep them: a deploy starts them again.`
          : `No service has been idle for ${duration(seconds)}.`;
  }

  private readonly _input = document.createElement('input');
  private readonly _list = document.createElement('p');
  private readonly _which: (seconds: number) => string[];
}
