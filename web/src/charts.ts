// The job page's curves with UPlot: loss (train per step, validation at evaluations), token
// accuracy and learning rate, all against the optimizer step. Hovering shows the values in the
// legend. The loss chart's container says how many train-loss points it plots (data-points), which
// the browser test reads to see the curve grow.
import UPlot from 'uplot'
import type { MetricPoint } from './api.js'
import { h } from './dom.js'

interface Series { key: keyof MetricPoint, label: string, color: string, points?: boolean }

interface ChartDef { title: string, series: Series[], logToggle?: boolean }

const CHARTS: Record<'loss' | 'accuracy' | 'lr', ChartDef> = {
  loss: {
    title: 'Loss',
    logToggle: true,
    series: [
      { key: 'train_loss', label: 'train loss', color: '#2563eb' },
      { key: 'valid_loss', label: 'valid loss', color: '#dc2626', points: true },
      { key: 'full_valid_loss', label: 'full valid loss', color: '#9333ea', points: true },
    ],
  },
  accuracy: {
    title: 'Token accuracy',
    series: [
      { key: 'train_mean_token_accuracy', label: 'train', color: '#059669' },
      { key: 'valid_mean_token_accuracy', label: 'valid', color: '#d97706', points: true },
      { key: 'full_valid_mean_token_accuracy', label: 'full valid', color: '#9333ea', points: true },
    ],
  },
  lr: { title: 'Learning rate', series: [{ key: 'learning_rate', label: 'learning rate', color: '#0891b2' }] },
}

class Chart {
  readonly el: HTMLElement
  private readonly plotEl: HTMLElement
  private plot: UPlot | null = null
  private log = false
  private data: UPlot.AlignedData = [[]]
  private points: MetricPoint[] = []

  constructor (readonly name: string, private readonly def: ChartDef) {
    this.plotEl = h('div', { class: 'plot' })
    const toggle = def.logToggle
      ? h('label', { class: 'log-toggle' },
        h('input', { type: 'checkbox', 'data-testid': `log-${name}`, onchange: (e: Event) => { this.setLog((e.target as HTMLInputElement).checked) } }),
        ' log scale')
      : null
    this.el = h('section', { class: 'chart empty', 'data-chart': name, 'data-points': 0 },
      h('div', { class: 'chart-head' }, h('h3', {}, def.title), toggle),
      h('p', { class: 'muted placeholder' }, 'No points yet.'), this.plotEl)
  }

  private width (): number { return Math.max(260, this.plotEl.clientWidth || this.el.clientWidth || 600) }

  private rebuild (): void {
    this.plot?.destroy()
    const opts: UPlot.Options = {
      width: this.width(),
      height: 220,
      scales: { x: { time: false }, y: this.log ? { distr: 3 } : {} },
      axes: [{ label: 'step' }, { size: 60 }],
      cursor: { drag: { x: true, y: false } },
      series: [
        { label: 'step' },
        ...this.def.series.map(s => ({
          label: s.label,
          stroke: s.color,
          width: 2,
          spanGaps: !s.points,
          points: s.points ? { show: true, size: 7, fill: s.color } : { show: false },
          value: (_u: UPlot, v: number | null) => v === null || v === undefined ? '—' : Number(v.toPrecision(5)).toString(),
        })),
      ],
    }
    this.plot = new UPlot(opts, this.data, this.plotEl)
  }

  private setLog (on: boolean): void {
    this.log = on
    this.plot?.destroy()
    this.plot = null
    this.update(this.points)
  }

  update (points: MetricPoint[]): void {
    this.points = points
    const xs = points.map(p => p.step)
    const ys = this.def.series.map(s => points.map(p => {
      const v = p[s.key]
      // a log scale cannot show 0 or less
      return typeof v === 'number' && Number.isFinite(v) && (!this.log || v > 0) ? v : null
    }))
    this.data = [xs, ...ys] as UPlot.AlignedData
    const first = ys[0] ?? []
    this.el.dataset.points = String(first.filter(v => v !== null).length)
    this.el.classList.toggle('empty', first.every(v => v === null))
    if (!this.plot) this.rebuild()
    else this.plot.setData(this.data)
  }

  resize (): void { this.plot?.setSize({ width: this.width(), height: 220 }) }

  destroy (): void { this.plot?.destroy(); this.plot = null }
}

export class Charts {
  readonly el: HTMLElement
  private readonly charts: Chart[]
  private readonly onResize = () => { for (const c of this.charts) c.resize() }

  constructor () {
    this.charts = Object.entries(CHARTS).map(([name, def]) => new Chart(name, def))
    this.el = h('div', { class: 'charts' }, ...this.charts.map(c => c.el))
    window.addEventListener('resize', this.onResize)
  }

  update (points: MetricPoint[]): void { for (const c of this.charts) c.update(points) }

  destroy (): void {
    window.removeEventListener('resize', this.onResize)
    for (const c of this.charts) c.destroy()
  }
}
