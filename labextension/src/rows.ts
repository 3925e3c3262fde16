/**
 * One list item per service, per image and per model version, with its action buttons.
 *
 * Buttons only run commands (`commands.ts`), so a button, the palette and the context menu
 * of a row all do the same thing.
 */
import {
  copyIcon,
  deleteIcon,
  LabIcon,
  linkIcon,
  notebookIcon,
  stopIcon
} from '@jupyterlab/ui-components';
import { ReadonlyPartialJSONObject } from '@lumino/coreutils';

import { IArtifact, IImage, IModel, IService } from './api';
import { CommandIDs } from './commands';
import { h, wrapAtSlashes } from './dom';

/** Runs a command with its arguments (the panel passes its command registry's). */
export type Execute = (
  command: string,
  args: ReadonlyPartialJSONObject
) => void;

export function modelId(name: string, version: number | string): string {
  return `${name}:${version}`;
}

function actionButton(
  className: string,
  icon: LabIcon,
  label: string,
  title: string,
  onClick: () => void,
  disabled: boolean
): HTMLButtonElement {
  const button = h(
    'button',
    { class: `accel-sidebar-action ${className}`, title, type: 'button' },
    icon.element({ tag: 'span', className: 'accel-sidebar-action-icon' }),
    h('span', { class: 'accel-sidebar-action-label' }, label)
  );
  button.disabled = disabled;
  button.addEventListener('click', event => {
    event.stopPropagation();
    onClick();
  });
  return button;
}

/** A service: name, health (word and colour), model, target and address, actions. */
export function serviceRow(
  service: IService,
  busy: string | null,
  execute: Execute
): HTMLLIElement {
  const args = { name: service.name };
  const run = (command: string) => () => execute(command, args);
  const disabled = busy !== null;
  const model = service.model
    ? `${modelId(service.model, service.version ?? '?')}${service.precision ? ` · ${service.precision}` : ''}`
    : 'model unknown';
  const buttons = [
    actionButton(
      'accel-service-copy-address',
      linkIcon,
      'Address',
      `Copy the address ${service.address}`,
      run(CommandIDs.copyAddress),
      disabled
    ),
    service.auth
      ? actionButton(
          'accel-service-copy-key',
          copyIcon,
          'Key',
          'Copy the API key clients must send',
          run(CommandIDs.copyKey),
          disabled
        )
      : null,
    actionButton(
      'accel-service-notebook',
      notebookIcon,
      'Notebook',
      `Open a notebook that scores pictures with ${service.name}`,
      run(CommandIDs.openScoringNotebook),
      disabled
    ),
    actionButton(
      'accel-service-stop',
      stopIcon,
      'Stop',
      `Stop ${service.name} and remove it from the workspace`,
      run(CommandIDs.stopService),
      disabled
    )
  ];
  return h(
    'li',
    {
      class: `accel-service-row${busy ? ' accel-sidebar-busy' : ''}`,
      dataset: { name: service.name, health: service.health }
    },
    h(
      'div',
      { class: 'accel-sidebar-row-head' },
      h('span', { class: 'accel-sidebar-row-name' }, service.name),
      h(
        'span',
        {
          class: `accel-service-health accel-health-${service.health}`,
          title: `health: ${service.health}`
        },
        service.health
      )
    ),
    h('div', { class: 'accel-sidebar-row-detail accel-service-model' }, model),
    h(
      'div',
      { class: 'accel-sidebar-row-detail' },
      h(
        'span',
        {
          class: 'accel-service-target',
          title: `target: ${service.target}`,
          dataset: { target: service.target }
        },
        service.target_title || service.target
      ),
      ' · ',
      h('code', { class: 'accel-service-address' }, service.address),
      service.auth ? ' · key required' : ''
    ),
    service.image
      ? h(
          'div',
          {
            class: 'accel-sidebar-row-detail accel-service-image',
            title: `${service.name} runs the image ${service.image}`
          },
          'image ',
          h('code', {}, ...wrapAtSlashes(service.image))
        )
      : null,
    busy ? h('div', { class: 'accel-sidebar-row-note' }, busy) : null,
    h('div', { class: 'accel-sidebar-actions' }, ...buttons)
  );
}

/**
 * An image: its tag, the model it holds, its size, whether Docker still has it, and delete
 * (disabled while a service runs it: services go first, then images, then models).
 */
export function imageRow(
  image: IImage,
  busy: string | null,
  execute: Execute
): HTMLLIElement {
  const id = modelId(image.name, image.version);
  const label = image.tag || id;
  const users = image.used_by;
  const missing = image.present === false;
  const classes = ['accel-image-row'];
  if (missing) {
    classes.push('accel-image-missing');
  }
  if (busy) {
    classes.push('accel-sidebar-busy');
  }
  const deleteTitle = users.length
    ? `Used by ${users.join(', ')}: stop ${users.length > 1 ? 'those services' : 'that service'} before deleting the image`
    : `Delete ${label} from the Docker engine and the workspace`;
  return h(
    'li',
    {
      class: classes.join(' '),
      dataset: {
        name: image.name,
        version: String(image.version),
        present: String(image.present)
      },
      title: image.base ? `${label}, built on ${image.base}` : label
    },
    h(
      'div',
      { class: 'accel-sidebar-row-head' },
      h(
        'span',
        { class: 'accel-sidebar-row-name accel-image-tag' },
        ...wrapAtSlashes(label)
      ),
      h(
        'span',
        { class: 'accel-sidebar-tag accel-image-size' },
        `${image.size_mb} MB`
      )
    ),
    h(
      'div',
      { class: 'accel-sidebar-row-detail accel-image-model' },
      image.model
    ),
    missing
      ? h(
          'div',
          {
            class: 'accel-sidebar-row-detail accel-image-warning',
            title:
              'The Docker engine no longer has this image; package the model again, ' +
              'or delete the image to forget it'
          },
          'removed from Docker'
        )
      : null,
    image.present === null
      ? h(
          'div',
          { class: 'accel-sidebar-row-detail accel-image-unknown' },
          'Docker engine not answering'
        )
      : null,
    image.pushed.length
      ? h(
          'div',
          { class: 'accel-sidebar-row-detail accel-image-pushed' },
          ...wrapAtSlashes(`pushed to ${image.pushed.join(', ')}`)
        )
      : null,
    users.length
      ? h(
          'div',
          { class: 'accel-sidebar-row-detail accel-image-users' },
          `used by ${users.join(', ')}`
        )
      : null,
    busy ? h('div', { class: 'accel-sidebar-row-note' }, busy) : null,
    h(
      'div',
      { class: 'accel-sidebar-actions' },
      actionButton(
        'accel-image-delete',
        deleteIcon,
        'Delete',
        deleteTitle,
        () =>
          execute(CommandIDs.deleteImage, {
            name: image.name,
            version: image.version
          }),
        busy !== null || users.length > 0
      )
    )
  );
}

const MARKS: Record<string, string> = { ok: ' ✓', warn: ' ⚠' };

/** `int8 1.3 MB ⚠` or `fp16 2.4 MB top-1 0.60`: the mark is the engine's verdict, never ours. */
export function artifactText(a: IArtifact): string {
  const mark = MARKS[a.check?.mark ?? ''] ?? '';
  const accuracy =
    a.top1 !== null && a.top1 !== undefined
      ? ` top-1 ${a.top1.toFixed(2)}`
      : '';
  return `${a.precision} ${a.size_mb} MB${accuracy}${mark}`;
}

/** A model version: artifacts, the services and images using it, and delete. */
export function modelRow(
  model: IModel,
  users: readonly string[],
  busy: string | null,
  execute: Execute
): HTMLLIElement {
  const id = modelId(model.name, model.version);
  const artifacts = model.artifacts.length
    ? model.artifacts.map(artifactText).join(' · ')
    : 'no artifacts';
  return h(
    'li',
    {
      class: `accel-model-row${busy ? ' accel-sidebar-busy' : ''}`,
      dataset: { name: model.name, version: String(model.version) },
      title: model.description || id
    },
    h(
      'div',
      { class: 'accel-sidebar-row-head' },
      h('span', { class: 'accel-sidebar-row-name' }, id),
      h('span', { class: 'accel-sidebar-tag' }, model.kind)
    ),
    h(
      'div',
      {
        class: 'accel-sidebar-row-detail accel-model-artifacts',
        title: model.artifacts
          .map(a => `${a.precision}: ${a.check?.text ?? ''}`)
          .join('\n')
      },
      artifacts
    ),
    users.length
      ? h(
          'div',
          { class: 'accel-sidebar-row-detail accel-model-users' },
          ...wrapAtSlashes(`used by ${users.join(', ')}`)
        )
      : null,
    busy ? h('div', { class: 'accel-sidebar-row-note' }, busy) : null,
    h(
      'div',
      { class: 'accel-sidebar-actions' },
      actionButton(
        'accel-model-delete',
        deleteIcon,
        'Delete',
        `Delete ${id} and its files`,
        () =>
          execute(CommandIDs.deleteModel, {
            name: model.name,
            version: model.version
          }),
        busy !== null
      )
    )
  );
}
