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

/** Pieces up to this long never break inside; longer ones may break anywhere. */
const UNBROKEN_MAX = 32;

/**
 * `text` as nodes that wrap at spaces and after each `/`, never at the hyphens inside a
 * name: `accel-widgets/squeezenet:1` breaks as `accel-widgets/` + `squeezenet:1`, not
 * `accel-` + `widgets/squeezenet:1`. The text content stays exactly `text`.
 */
export function wrapAtSlashes(text: string): Node[] {
  const nodes: Node[] = [];
  for (const word of text.split(/(\s+)/)) {
    if (!word) {
      continue;
    }
    if (/^\s+$/.test(word) || !/[-/]/.test(word)) {
      nodes.push(document.createTextNode(word));
      continue;
    }
    word.split(/(?<=\/)/).forEach((piece, index) => {
      if (index > 0) {
        nodes.push(h('wbr'));
      }
      nodes.push(
        piece.length <= UNBROKEN_MAX
          ? h('span', { class: 'accel-nowrap' }, piece)
          : document.createTextNode(piece)
      );
    });
  }
  return nodes;
}
