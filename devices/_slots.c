/* devices._slots: build a frozen, slotted dataclass by storing straight into its slots.
 *
 * devices.construct's Python constructor stores each field through its slot descriptor's
 * __set__, one interpreted call per field: about 5,500 instructions for a Fill built from
 * keywords, 4,400 for a Message from positions, called from compiled code. A Maker does what
 * that function does -- same signature and defaults, a TypeError where the class raises one,
 * no __init__ and no __post_init__ -- in about 1,900 and 850. It refuses any class whose fields
 * are not plain object slots of the class itself, so it writes only where the class's own
 * descriptors would.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define MAX_FIELDS 16

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyTypeObject *cls;
    PyObject *names;    /* tuple of str: the fields, in order */
    PyObject *defaults; /* tuple: the defaults of the last len(defaults) fields */
    Py_ssize_t n;
    Py_ssize_t required;
    Py_ssize_t offsets[MAX_FIELDS];
} Maker;

/* The index of field `key`, -1 when there is none (TypeError set), -2 on a failed compare. */
static Py_ssize_t
find_field(Maker *m, PyObject *key)
{
    for (Py_ssize_t j = 0; j < m->n; j++) {
        if (PyTuple_GET_ITEM(m->names, j) == key) {
            return j;
        }
    }
    if (PyUnicode_Check(key)) {
        for (Py_ssize_t j = 0; j < m->n; j++) {
            int eq = PyUnicode_Compare(PyTuple_GET_ITEM(m->names, j), key);
            if (eq == -1 && PyErr_Occurred()) {
                return -2;
            }
            if (eq == 0) {
                return j;
            }
        }
    }
    PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%S'",
                 m->cls->tp_name, key);
    return -1;
}

static int
put_keyword(Maker *m, PyObject **values, PyObject *key, PyObject *value)
{
    Py_ssize_t j = find_field(m, key);
    if (j < 0) {
        return -1;
    }
    if (values[j] != NULL) {
        PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%S'",
                     m->cls->tp_name, key);
        return -1;
    }
    values[j] = value;
    return 0;
}

static int
put_positional(Maker *m, PyObject **values, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > m->n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd positional arguments (%zd given)",
                     m->cls->tp_name, m->n, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        values[i] = args[i];
    }
    return 0;
}

/* Defaults for what was not given, then one allocation and a store per slot. */
static PyObject *
finish(Maker *m, PyObject **values)
{
    for (Py_ssize_t j = 0; j < m->n; j++) {
        if (values[j] != NULL) {
            continue;
        }
        if (j < m->required) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%S'",
                         m->cls->tp_name, PyTuple_GET_ITEM(m->names, j));
            return NULL;
        }
        values[j] = PyTuple_GET_ITEM(m->defaults, j - m->required);
    }
    PyObject *obj = m->cls->tp_alloc(m->cls, 0);
    if (obj == NULL) {
        return NULL;
    }
    for (Py_ssize_t j = 0; j < m->n; j++) {
        PyObject **slot = (PyObject **)((char *)obj + m->offsets[j]);
        Py_INCREF(values[j]);
        *slot = values[j];
    }
    return obj;
}

static PyObject *
maker_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Maker *m = (Maker *)callable;
    PyObject *values[MAX_FIELDS] = {NULL};
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (put_positional(m, values, args, nargs) < 0) {
        return NULL;
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        if (put_keyword(m, values, PyTuple_GET_ITEM(kwnames, k), args[nargs + k]) < 0) {
            return NULL;
        }
    }
    return finish(m, values);
}

static PyObject *
maker_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *cls_obj, *names, *defaults;
    static char *keywords[] = {"cls", "names", "defaults", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!O!:Maker", keywords, &PyType_Type,
                                     &cls_obj, &PyTuple_Type, &names, &PyTuple_Type, &defaults)) {
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)cls_obj;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (n > MAX_FIELDS || PyTuple_GET_SIZE(defaults) > n) {
        PyErr_Format(PyExc_ValueError, "Maker: %zd fields and %zd defaults", n,
                     PyTuple_GET_SIZE(defaults));
        return NULL;
    }
    if (cls->tp_new != PyBaseObject_Type.tp_new || cls->tp_alloc == NULL) {
        PyErr_Format(PyExc_TypeError, "Maker: %s has its own __new__", cls->tp_name);
        return NULL;
    }
    Maker *m = (Maker *)type->tp_alloc(type, 0);
    if (m == NULL) {
        return NULL;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *field = PyTuple_GET_ITEM(names, j);
        PyObject *descr = PyUnicode_Check(field) ? PyDict_GetItemWithError(cls->tp_dict, field)
                                                 : NULL;
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_TypeError, "Maker: %R is not a slot of %s", field,
                             cls->tp_name);
            }
            Py_DECREF(m);
            return NULL;
        }
        PyMemberDescrObject *member = (PyMemberDescrObject *)descr;
        if (member->d_common.d_type != cls || member->d_member->type != T_OBJECT_EX ||
            (member->d_member->flags & READONLY) || member->d_member->offset <= 0 ||
            (size_t)member->d_member->offset + sizeof(PyObject *) > (size_t)cls->tp_basicsize) {
            PyErr_Format(PyExc_TypeError, "Maker: %R is not a plain object slot of %s", field,
                         cls->tp_name);
            Py_DECREF(m);
            return NULL;
        }
        m->offsets[j] = member->d_member->offset;
    }
    Py_INCREF(cls);
    m->cls = cls;
    Py_INCREF(names);
    m->names = names;
    Py_INCREF(defaults);
    m->defaults = defaults;
    m->n = n;
    m->required = n - PyTuple_GET_SIZE(defaults);
    m->vectorcall = maker_vectorcall;
    return (PyObject *)m;
}

static void
maker_dealloc(Maker *m)
{
    Py_XDECREF(m->cls);
    Py_XDECREF(m->names);
    Py_XDECREF(m->defaults);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyObject *
maker_repr(Maker *m)
{
    return PyUnicode_FromFormat("<devices._slots.Maker of %s>", m->cls->tp_name);
}

static PyTypeObject MakerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "devices._slots.Maker",
    .tp_doc = PyDoc_STR("Maker(cls, names, defaults): builds cls by storing into its slots."),
    .tp_basicsize = sizeof(Maker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Maker, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = maker_new,
    .tp_dealloc = (destructor)maker_dealloc,
    .tp_repr = (reprfunc)maker_repr,
};

static struct PyModuleDef slots_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "devices._slots",
    .m_doc = PyDoc_STR("Constructors for the contract's frozen, slotted dataclasses."),
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__slots(void)
{
    if (PyType_Ready(&MakerType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&slots_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&MakerType);
    if (PyModule_AddObject(module, "Maker", (PyObject *)&MakerType) < 0) {
        Py_DECREF(&MakerType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
