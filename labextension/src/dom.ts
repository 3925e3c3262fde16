/**
 * A tiny element builder: the sidebar is a few lists, not worth a framework.
 */

export type Child = Node | string | null | undefined | false;

export interface IAttrs {
  class?: string;
  title?: string;
  dataset?: Record<string, string>;
  [attribute: string]: string | Record<string, string> | undefined;
}

/** `h('li', {class: 'row', dataset: {name: 'sq'}}, 'text', child)` */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: IAttrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined) {
      continue;
    }
    if (key === 'dataset' && typeof value === 'object') {
      Object.assign(element.dataset, value);
    } else if (key === 'class' && typeof value === 'string') {
      element.className = value;
    } else if (typeof value === 'string') {
      element.setAttribute(key, value);
    }
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    element.append(child);
  }
  return element;
}
