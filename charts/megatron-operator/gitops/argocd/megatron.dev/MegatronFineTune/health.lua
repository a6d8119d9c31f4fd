-- Argo CD health of a MegatronFineTune (megatron.dev/v1alpha1).
--
-- Reads what the operator writes (docs/operator.md, "Lifecycle"): status.phase, the conditions
-- and status.observedGeneration, plus the trainer's status.progress and status.result.
--   Suspended, Queued              -> Suspended
--   Pending, Running, Restarting   -> Progressing ("<phase>: <progress or why>")
--   Succeeded                      -> Healthy
--   Failed                         -> Degraded ("<reason>: <the trainer's or operator's message>")
--   no status yet, or a status of an older generation -> Progressing
--
-- Uses only the base and table libraries: argocd-cm scripts run without the string library
-- unless resource.customizations.useOpenLibs.megatron.dev_MegatronFineTune is true.
local hs = {}

local function condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function nonempty(s)
  return s ~= nil and s ~= ""
end

-- "<prefix>: <detail>", or the prefix alone without a detail.
local function joined(prefix, detail)
  if nonempty(detail) then
    return prefix .. ": " .. detail
  end
  return prefix
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to report a status"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase
local conditions = status.conditions
local progress = nil
if status.progress ~= nil and nonempty(status.progress.summary) then
  progress = status.progress.summary
end

if phase == "Suspended" or phase == "Queued" then
  hs.status = "Suspended"
  local suspended = condition(conditions, "Suspended")
  local detail = nil
  if suspended ~= nil and suspended.status == "True" then
    detail = suspended.message
  end
  if progress ~= nil then
    if nonempty(detail) then
      detail = detail .. "; at step " .. progress
    else
      detail = "at step " .. progress
    end
  end
  hs.message = joined(phase, detail)
  return hs
end

if phase == "Pending" or phase == "Restarting" then
  hs.status = "Progressing"
  local reconciling = condition(conditions, "Reconciling")
  local label = phase
  local detail = nil
  if reconciling ~= nil and reconciling.status == "True" then
    detail = reconciling.message
    if phase == "Restarting" and nonempty(reconciling.reason) then
      label = phase .. " (" .. reconciling.reason .. ")"
    end
  end
  if not nonempty(detail) and progress ~= nil then
    detail = "step " .. progress
  end
  hs.message = joined(label, detail)
  return hs
end

if phase == "Running" then
  hs.status = "Progressing"
  local detail = nil
  if progress ~= nil then
    detail = "step " .. progress
  else
    local model = condition(conditions, "ModelReady")
    if model ~= nil and model.status == "False" and nonempty(model.message) then
      detail = "fetching pretrained weights: " .. model.message
    else
      local running = condition(conditions, "Running")
      if running ~= nil then
        detail = running.message
      end
    end
  end
  hs.message = joined("Running", detail)
  return hs
end

if phase == "Succeeded" then
  hs.status = "Healthy"
  local result = status.result
  local succeeded = condition(conditions, "Succeeded")
  if result ~= nil and result.outcome == "Succeeded" and nonempty(result.message) then
    hs.message = joined(result.reason or "Succeeded", result.message)
  elseif succeeded ~= nil and nonempty(succeeded.message) then
    hs.message = succeeded.message
  else
    hs.message = "Succeeded"
  end
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  local result = status.result
  local failed = condition(conditions, "Failed")
  -- The trainer's own words when it reported the failure of the current attempt.
  if result ~= nil and result.outcome == "Failed" and nonempty(result.message)
      and (result.attempt == nil or status.restarts == nil or result.attempt == status.restarts) then
    hs.message = joined(result.reason or "Failed", result.message)
  elseif failed ~= nil and nonempty(failed.message) then
    hs.message = joined(failed.reason or "Failed", failed.message)
  else
    hs.message = "Failed"
  end
  return hs
end

hs.status = "Unknown"
hs.message = "unknown phase " .. tostring(phase)
return hs
