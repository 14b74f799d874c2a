// The workflow as a state machine: which event moves an execution from one state to the next.
import { readFileSync } from "node:fs";

export type StateType = "start" | "task" | "end";

export interface State {
  id: string;
  label: string;
  type: StateType;
  description: string;
}

export interface Transition {
  from: string;
  to: string;
  event: string;
  label: string;
}

export interface Workflow {
  workflow_id: string;
  title: string;
  description: string;
  initial_state: string;
  states: State[];
  transitions: Transition[];
}

export function loadWorkflow(file: string): Workflow {
  const workflow = JSON.parse(readFileSync(file, "utf8")) as Workflow;
  if (!Array.isArray(workflow.states) || !Array.isArray(workflow.transitions)) {
    throw new Error(`${file} is not a workflow definition`);
  }
  return workflow;
}

export class Engine {
  private readonly states: Map<string, State>;

  constructor(readonly workflow: Workflow) {
    this.states = new Map(workflow.states.map((state) => [state.id, state]));
    if (!this.states.has(workflow.initial_state)) {
      throw new Error(`unknown initial state ${workflow.initial_state}`);
    }
  }

  get initialState(): string {
    return this.workflow.initial_state;
  }

  /** Events accepted in `state`. */
  events(state: string): string[] {
    return this.workflow.transitions.filter((t) => t.from === state).map((t) => t.event);
  }

  transition(state: string, event: string): Transition | undefined {
    return this.workflow.transitions.find((t) => t.from === state && t.event === event);
  }

  /** An end state, or one that no event leaves: the execution is complete there. */
  isFinal(state: string): boolean {
    return this.states.get(state)?.type === "end" || this.events(state).length === 0;
  }
}
